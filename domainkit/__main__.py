from domainkit.cli import main

main()

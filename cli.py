"""Run the domainkit command line from a checkout: ``python cli.py --help``."""

from domainkit.cli import main

if __name__ == "__main__":
    main()

"""``domainkit ask``, ``domainkit chat`` and ``domainkit serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from domainkit.cli import app
from domainkit.cli.console import console, err_console, print_json
from domainkit.cli.options import BuildDirOpt, DomainArg, JsonOpt
from domainkit.config import load_domain
from domainkit.config.schema import Policy

PolicyOpt = Annotated[
    Policy | None,
    typer.Option(
        "--policy",
        help="auto: evidence, the answerability gate and a checked quote, else a refusal; "
        "rag: the same without the gate; closed: no retrieval; naive: whole passages, no "
        "checks; evidence: the best evidence sentence, no model. Default: the recipe's "
        "runtime.policy.",
        show_default=False,
    ),
]
BaseOpt = Annotated[
    bool, typer.Option("--base", help="Use the base model, without the trained adapter.")
]
ShowContextOpt = Annotated[
    bool,
    typer.Option(
        "--show-context", help="Print the evidence the model read, its quote and the gate."
    ),
]


def _assistant(domain, build_dir, base: bool, max_queue: int = 64):
    from domainkit.runtime import Assistant

    loaded = load_domain(domain, build_dir)
    with err_console.status("Loading the model and the index…"):
        assistant = Assistant.from_domain(loaded, tuned=not base, max_queue=max_queue)
    return loaded, assistant


def _stream_text(text: str) -> None:
    console.print(text, end="", markup=False, highlight=False)


_ROUTES = {
    "answer": "quoted from the documents, the model's choice of line, quote checked",
    "evidence": "quoted from the documents, the best-matching lines (no model choice)",
    "rag": "answered by the model from whole passages, unchecked",
    "closed": "answered by the model without the documents",
    "refusal": "not answered: the documents do not cover it",
}


def _print_sources(answer, show_context: bool, disclaimer: str | None) -> None:
    console.print(f"[dim]({_ROUTES.get(answer.route, answer.route)}, {answer.seconds:.1f}s)[/]")
    for s in answer.sources:
        heading = f" > {escape(s.heading)}" if s.heading else ""
        page = f", page {s.page}" if s.page else ""
        console.print(
            f"  [cyan]\\[{s.number}][/] {escape(s.document)}{heading}{page} [dim]({s.score:.2f})[/]"
        )
    if show_context:
        for line in answer.evidence:
            console.print(f"  [dim]\\[{line.number}] {escape(line.text)}[/]", highlight=False)
        if answer.quote:
            console.print(f"  [dim]model: {escape(answer.quote)}[/]", highlight=False)
        if answer.gate:
            gate = ", ".join(f"{k} {v}" for k, v in answer.gate.items())
            console.print(f"  [dim]gate: {escape(gate)}[/]", highlight=False)
    if disclaimer and answer.route != "refusal":
        console.print(f"[italic dim]{escape(disclaimer)}[/]")


@app.command()
def ask(
    domain: DomainArg,
    question: Annotated[str, typer.Argument(help="The question.", show_default=False)],
    policy: PolicyOpt = None,
    show_context: ShowContextOpt = False,
    base: BaseOpt = False,
    build_dir: BuildDirOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Answer one question and print its sources (or, with --json, everything as JSON)."""
    loaded, assistant = _assistant(domain, build_dir, base)
    messages = [{"role": "user", "content": question}]
    policy_name = policy
    if json_output:
        print_json(assistant.answer(messages, policy=policy_name).to_dict())
        return
    answer = assistant.answer(
        messages,
        policy=policy_name,
        on_text=lambda t: console.print(t, end="", markup=False, highlight=False),
    )
    console.print()
    _print_sources(answer, show_context, loaded.config.disclaimer)


@app.command()
def chat(
    domain: DomainArg,
    policy: PolicyOpt = None,
    show_context: ShowContextOpt = False,
    base: BaseOpt = False,
    build_dir: BuildDirOpt = None,
) -> None:
    """Chat in the terminal. Answers stream as they are generated, with their sources.

    Type `/reset` to start over, `/quit` (or Ctrl-D) to leave.
    """
    loaded, assistant = _assistant(domain, build_dir, base)
    name = loaded.config.persona.assistant_name or loaded.config.name
    console.print(f"[bold]{name}[/] — /reset starts over, /quit leaves.")
    history: list[dict] = []
    policy_name = policy
    while True:
        try:
            question = console.input("[bold green]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if question in ("/quit", "/exit"):
            return
        if question == "/reset":
            history = []
            console.print("[dim](new conversation)[/]")
            continue
        if not question:
            continue
        history.append({"role": "user", "content": question})
        console.print("[bold blue]assistant>[/] ", end="")
        answer = assistant.answer(
            history,
            policy=policy_name,
            on_text=_stream_text,
        )
        console.print()
        _print_sources(answer, show_context, loaded.config.disclaimer)
        history.append({"role": "assistant", "content": answer.text})


@app.command()
def serve(
    domain: DomainArg,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            "--api-keys-file",
            help="File of accepted API keys, one per line; keys can also come from "
            "$DOMAINKIT_API_KEYS (comma-separated). Without any, the API is open.",
            show_default=False,
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask.")] = 1024,
    max_body_kb: Annotated[int, typer.Option(help="Largest request body, in KiB.")] = 1024,
    max_messages: Annotated[int, typer.Option(help="Most messages in one request.")] = 64,
    queue_size: Annotated[
        int,
        typer.Option(
            help="Requests allowed to wait for the model; more get 503 busy with Retry-After "
            "at once (never an unbounded wait)."
        ),
    ] = 64,
    base: BaseOpt = False,
    build_dir: BuildDirOpt = None,
) -> None:
    """Serve the assistant: an OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`),
    a web chat page at `/`, `/healthz` and Prometheus `/metrics`.

    Point any OpenAI client at `http://HOST:PORT/v1`. Responses carry the route and the
    sources in an extra `domainkit` field. Run behind a reverse proxy for TLS.
    """
    import uvicorn

    from domainkit.runtime.auth import load_api_keys
    from domainkit.runtime.server import ServerLimits, create_app

    keys = load_api_keys(api_keys_file)
    loaded, assistant = _assistant(domain, build_dir, base, max_queue=queue_size)
    limits = ServerLimits(
        max_body_bytes=max_body_kb * 1024,
        max_messages=max_messages,
        max_tokens=max_tokens,
        # in progress = waiting + generating
        max_active=queue_size + assistant.scheduler.max_batch,
    )
    app_ = create_app(
        assistant,
        model_name=loaded.config.name,
        api_keys=keys,
        limits=limits,
        allowed_hosts=_allowed_hosts(host, keys),
    )
    err_console.print(
        f"Serving {loaded.config.name} ({'tuned' if assistant.tuned else 'base model'}) on "
        f"http://{host}:{port}/ — API at /v1, {'API keys required' if keys else 'no API key'}"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _allowed_hosts(host: str, keys: set[str]) -> list[str] | None:
    """The Host values a server on loopback accepts (a web page re-pointed at 127.0.0.1 by
    DNS rebinding sends its own name); a public address warns when it has no key."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "::1", "[::1]"]
    if not keys:
        err_console.print(
            f"[yellow]warning:[/] listening on {escape(host)} with no API key: anyone who can "
            "reach this machine can use the assistant (--api-keys-file)"
        )
    return None

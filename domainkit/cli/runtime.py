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


class _Logger:
    """Records what ``ask`` and ``chat`` answer in the domain's conversation log."""

    def __init__(self, domain, source: str):
        from domainkit.feedback.log import build_id, open_log

        self.log, self.source = open_log(domain), source
        self.build = build_id(domain) if self.log is not None else "-"

    def record(self, messages, answer, policy: str) -> str:
        """The exchange's id (also without a log, so output looks the same)."""
        from domainkit.feedback.log import exchange_of, new_id

        ident = new_id()
        if self.log is not None:
            exchange = exchange_of(
                ident, messages, answer, source=self.source, build=self.build, policy=policy
            )
            self.log.record(exchange)
        return ident


def _stream_text(text: str) -> None:
    console.print(text, end="", markup=False, highlight=False)


_ROUTES = {
    "answer": "quoted from the documents, the model's choice of line, quote checked",
    "evidence": "quoted from the documents, the best-matching lines (no model choice)",
    "rag": "answered by the model from whole passages, unchecked",
    "closed": "answered by the model without the documents",
    "refusal": "not answered: the documents do not cover it",
    "reviewed": "as a reviewer answered the same question",
}


def _print_sources(answer, show_context: bool, disclaimer: str | None, ident: str) -> None:
    route = _ROUTES.get(answer.route, answer.route)
    console.print(f"[dim]({route}, {answer.seconds:.1f}s, {ident})[/]")
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
    logger = _Logger(loaded, "ask")
    messages = [{"role": "user", "content": question}]
    policy_name = policy or assistant.settings.policy
    if json_output:
        answer = assistant.answer(messages, policy=policy_name)
        ident = logger.record(messages, answer, policy_name)
        print_json({"id": ident, **answer.to_dict()})
        return
    answer = assistant.answer(
        messages,
        policy=policy_name,
        on_text=lambda t: console.print(t, end="", markup=False, highlight=False),
    )
    console.print()
    ident = logger.record(messages, answer, policy_name)
    _print_sources(answer, show_context, loaded.config.disclaimer, ident)


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
    logger = _Logger(loaded, "chat")
    name = loaded.config.persona.assistant_name or loaded.config.name
    console.print(f"[bold]{name}[/] — /reset starts over, /quit leaves.")
    history: list[dict] = []
    policy_name = policy or assistant.settings.policy
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
        ident = logger.record(history, answer, policy_name)
        _print_sources(answer, show_context, loaded.config.disclaimer, ident)
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
    admin_keys_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-keys-file",
            help="File of admin keys, one per line (or $DOMAINKIT_ADMIN_KEYS): with any, the "
            "review page is served at /review behind them. Without, review with `domainkit "
            "review` on this machine.",
            show_default=False,
        ),
    ] = None,
    base: BaseOpt = False,
    build_dir: BuildDirOpt = None,
) -> None:
    """Serve the assistant: an OpenAI-compatible API (`/v1/chat/completions`, `/v1/models`,
    `/v1/feedback`), a web chat page at `/`, `/healthz` and Prometheus `/metrics`.

    Point any OpenAI client at `http://HOST:PORT/v1`. Responses carry the route and the
    sources in an extra `domainkit` field. Each answer is kept in the domain's conversation
    log (personal data masked; `runtime.log: false` turns it off) for feedback and review.
    Run behind a reverse proxy for TLS.
    """
    import uvicorn

    from domainkit.feedback.desk import ReviewDesk
    from domainkit.feedback.log import build_id, open_log
    from domainkit.runtime.auth import ADMIN_KEYS_ENV, load_api_keys
    from domainkit.runtime.server import ServerLimits, create_app

    keys = load_api_keys(api_keys_file)
    admin_keys = load_api_keys(admin_keys_file, env=ADMIN_KEYS_ENV)
    loaded, assistant = _assistant(domain, build_dir, base, max_queue=queue_size)
    conversations = open_log(loaded)
    review = (
        ReviewDesk(loaded, conversations, assistant.retriever)
        if conversations is not None and admin_keys
        else None
    )
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
        conversations=conversations,
        build=build_id(loaded),
        review=review,
        admin_keys=admin_keys,
    )
    kept = f"log {loaded.log_path}" if conversations is not None else "no conversation log"
    err_console.print(
        f"Serving {loaded.config.name} ({'tuned' if assistant.tuned else 'base model'}) on "
        f"http://{host}:{port}/ — API at /v1, {'API keys required' if keys else 'no API key'}"
        f", {kept}{', review at /review' if review else ''}"
    )
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _allowed_hosts(host: str, keys: set[str]) -> list[str] | None:
    """The Host values a server on loopback accepts (a web page re-pointed at 127.0.0.1 by
    DNS rebinding sends its own name); a public address warns when it has no key."""
    from domainkit.runtime.server import local_hosts

    if (hosts := local_hosts(host)) is not None:
        return hosts
    if not keys:
        err_console.print(
            f"[yellow]warning:[/] listening on {escape(host)} with no API key: anyone who can "
            "reach this machine can use the assistant (--api-keys-file)"
        )
    return None

"""The evaluation report: ``report.json``, ``report.md``, ``answers.jsonl`` and PNG charts
(accuracy by condition; the training loss curve) in ``BUILD/eval/``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from domainkit.utils.atomic import atomic_write_json, atomic_write_text

COLUMNS = [
    ("accuracy", "accuracy"),
    ("token_f1", "token F1"),
    ("key_facts", "key facts"),
    ("refusal_accuracy", "refused unanswerable"),
    ("false_refusals", "false refusals"),
    ("faithfulness", "faithfulness"),
    ("judge", "judge"),
    ("seconds_per_answer", "s/answer"),
]


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(conditions: dict[str, dict]) -> list[list[str]]:
    """Rows (header first) of one question set's condition table, as printed and written."""
    rows = [["condition", *[label for _, label in COLUMNS]]]
    for name, metrics in conditions.items():
        rows.append([name, *[_cell(metrics.get(key)) for key, _ in COLUMNS]])
    return rows


def markdown(report) -> str:
    lines = [f"# Evaluation: {report.headline}", ""]
    for set_name, conditions in report.conditions.items():
        first = next(iter(conditions.values()))
        lines += [
            f"## {set_name} ({first['answerable']} answerable, "
            f"{first['unanswerable']} unanswerable)",
            "",
        ]
        rows = table(conditions)
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        lines.append("")
    lines += ["## Retrieval (source document, answerable questions)", ""]
    lines += [f"- {k}: {v}" for k, v in report.retrieval.items()]
    lines += ["", "## Runtime policy calibration (validation split)", ""]
    lines += [f"- {k}: {v}" for k, v in report.calibration.items()] or ["- not calibrated"]
    if report.general:
        lines += ["", "## General knowledge (closed-book, forgetting check)", ""]
        lines += [f"- {model}: {value:.0%}" for model, value in report.general.items()]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += [
        "",
        "Metrics: accuracy = answerable questions answered with at least half the reference's "
        "key facts (or its yes/no/maybe label) and not refused; faithfulness = share of an "
        "answer's content words found in the passages it was given.",
        "",
        "![accuracy by condition](accuracy.png)",
    ]
    if (report.path / "loss.png").is_file():
        lines.append("![training loss](loss.png)")
    return "\n".join(lines) + "\n"


def plot_accuracy(conditions: dict[str, dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(conditions)
    series = [
        ("accuracy", "accuracy (answerable)"),
        ("refusal_accuracy", "refused unanswerable"),
        ("false_refusals", "false refusals"),
    ]
    x = np.arange(len(names))
    width = 0.26
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for i, (key, label) in enumerate(series):
        values = [conditions[n].get(key) or 0.0 for n in names]
        bars = ax.bar(x + (i - 1) * width, values, width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, names, rotation=12, fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_title("Answers by condition (eval.yaml)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_report(domain, report, rows: list[dict]) -> None:
    from domainkit.eval.runner import report_dict

    out = report.path
    out.mkdir(parents=True, exist_ok=True)
    loss = domain.build_dir / "train" / "loss.png"
    if loss.is_file():
        shutil.copyfile(loss, out / "loss.png")
    first = next(iter(report.conditions.values()))
    plot_accuracy(first, out / "accuracy.png")
    atomic_write_text(out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(out / "report.md", markdown(report))
    atomic_write_json(out / "report.json", report_dict(report))

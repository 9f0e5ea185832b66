"""The evaluation report: ``report.json``, ``report.md``, ``answers.jsonl`` and PNG charts
(accuracy by condition; the training loss curve) in ``BUILD/eval/``."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from domainkit.answer.gate import reading_counts
from domainkit.utils.atomic import atomic_write_json, atomic_write_text, replace_dir

COLUMNS = [
    ("accuracy", "accuracy"),
    ("refusal_accuracy", "refused unanswerable"),
    ("false_refusals", "false refusals"),
    ("median_words", "median words"),
    ("citation_correct", "citation correct"),
    ("key_facts", "key facts"),
    ("faithfulness", "faithfulness"),
    ("judge", "judge"),
    ("seconds_per_answer", "s/answer"),
]


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer() and value > 1:
        return str(int(value))
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(conditions: dict[str, dict]) -> list[list[str]]:
    """Rows (header first) of one question set's condition table, as printed and written."""
    rows = [["condition", *[label for _, label in COLUMNS]]]
    for name, metrics in conditions.items():
        rows.append([name, *[_cell(metrics.get(key)) for key, _ in COLUMNS]])
    return rows


def markdown(report, with_loss: bool = False) -> str:
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
    lines += ["", "## Answerability gate (calibrated on the validation questions)", ""]
    lines += _calibration_lines(report.calibration)
    if report.learning:
        lines += ["", "## Learning from reviewed questions", ""]
        lines += _learning_lines(report.learning)
    if report.general:
        lines += ["", "## General knowledge (closed-book, forgetting check)", ""]
        lines += [f"- {model}: {value:.0%}" for model, value in report.general.items()]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += [
        "",
        "Metrics: accuracy = answerable questions answered with at least half the reference's "
        "key facts (or its yes/no/maybe label, or one of its accepted spans) and not refused; "
        "median words = of answers to answerable questions that were not refused; citation "
        "correct = share of correct answers whose cited passages hold the reference's key "
        "facts; faithfulness = share of an answer's content words found in its passages.",
        "",
        "![accuracy by condition](accuracy.png)",
    ]
    if report.calibration.get("curve"):
        lines.append("![answered and refused by gate threshold](gate.png)")
    if with_loss:
        lines.append("![training loss](loss.png)")
    return "\n".join(lines) + "\n"


def _calibration_lines(calibration: dict) -> list[str]:
    gate = calibration.get("gate")
    lines = []
    if "reader_weight" in calibration:
        tried = ", ".join(f"{w}: {a:.2f}" for w, a in calibration["reader_accuracy"].items())
        lines.append(
            f"- reader weight {calibration['reader_weight']} (0 = the evidence selector's "
            f"best line, 1 = the model's choice); "
            + (f"validation accuracy by weight: {tried}" if tried else "the default, not fitted")
        )
    if not gate:
        return [*lines, f"- {calibration.get('note', 'not calibrated')}"]
    weights = ", ".join(f"{k} {v:+.2f}" for k, v in gate["weights"].items())
    return lines + [
        f"- {calibration['validation_questions']} validation questions and "
        f"{calibration.get('gold_absent_twins', 0)} gold-absent twins, "
        f"{calibration.get('twins_still_answered', 0)} of them left out because their "
        "evidence still answered "
        f"({calibration['answerable']} answerable, {calibration['unanswerable']} unanswerable)",
        f"- P(answerable) = sigmoid({weights}, bias {gate['bias']:+.2f}); "
        f"answer when >= {gate['threshold']:.3f}"
        + (
            (
                f" (the low end of the {calibration['guarded']} answerable validation "
                "questions' scores, where the lowest of that many falls on average: they "
                "are synthetic, worded like their passage and easier than users' own, so the "
                f"{budget:.0%} false-refusal budget applies only to a validation.yaml of real "
                "questions)"
                if calibration.get("guarded_questions") == "synthetic"
                else f" (the highest cut refusing at most {budget:.0%} of the "
                f"{calibration.get('guarded', calibration['answerable'])} answerable "
                "validation questions it counts: those answered right, when there are enough)"
            )
            if (budget := calibration.get("max_false_refusals")) is not None
            else " (the cut of best balanced accuracy)"
        ),
        *(
            [f"- left out (their sign on validation contradicted the prior): {', '.join(dropped)}"]
            if (dropped := calibration.get("dropped"))
            else []
        ),
        f"- on validation: {calibration['answered']:.0%} of answerable answered, "
        f"{calibration['refused']:.0%} of unanswerable refused",
        "- the runtime policy "
        + (
            "reads the model's choice of line and refusal"
            if "reader_weight" not in calibration
            or reading_counts(calibration["reader_weight"], gate["weights"])
            else "runs no model: with reader weight 0 and no weight on the model's refusal, "
            "its reading could not change an answer"
        ),
    ]


def _learning_lines(learning: dict) -> list[str]:
    """What the users' reviewed questions (validation.yaml) changed, and why each use was
    taken or not."""
    users = learning["users_questions"]
    lines = [
        f"- users' questions in validation.yaml: {users['answerable']} answerable "
        f"({users['with_line']} with a reviewed line), {users['unanswerable']} unanswerable"
    ]
    if learning["gate"] == "prior":
        lines.append(
            f"- gate: the prior fitted on the shipped corpora's questions ({learning['prior']}"
            "), the validation questions being too few to fit"
        )
    elif learning.get("guarded_questions") == "users'":
        lines.append(
            "- gate: calibrated, its cut set by the false-refusal budget on the users' "
            "questions (they are what new questions look like)"
        )
    else:
        lines.append(
            "- gate: calibrated, its cut at the low end of the answerable validation "
            "questions' scores (below the users' own answered right): too few users' "
            "questions answered right for the false-refusal budget to hold on them"
        )
    repeats = learning.get("repeats")
    if repeats and repeats["answers"] + repeats["refusals"]:
        lines.append(
            f"- answers to repeats: {repeats['answers']} reviewed lines and "
            f"{repeats['refusals']} reviewed refusals answer questions that mean the same "
            f"(similarity >= {repeats['threshold']:.3f}, same names and figures), route "
            "`reviewed`"
        )
    else:
        lines.append("- answers to repeats: none (no reviewed questions with a verdict)")
    if learning.get("samples"):
        lines.append(
            f"- training samples: {learning['samples']} in the runtime's format "
            "(`domainkit export` writes them as dataset/reviewed.jsonl); the build does not "
            "train on them, since they calibrate the gate"
        )
    return lines


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Write the figure beside ``path`` and rename it into place, then free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_gate(curve: list[dict], chosen: float, path: Path) -> Path:
    """Share of answerable questions answered and unanswerable refused, by threshold."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot([c["refused"] for c in curve], [c["answered"] for c in curve], marker=".")
    point = min(curve, key=lambda c: abs(c["threshold"] - chosen))
    ax.scatter([point["refused"]], [point["answered"]], color="red", zorder=3, label="chosen")
    ax.set_xlabel("unanswerable refused")
    ax.set_ylabel("answerable answered")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Answerability gate on the validation questions")
    return _save(fig, path)


def plot_accuracy(conditions: dict[str, dict], path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
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
    return _save(fig, path)


def report_dict(report) -> dict:
    """An ``EvalReport`` as JSON-ready data."""
    data = asdict(report)
    data["path"] = str(report.path)
    return data


def write_report(domain, report, rows: list[dict]) -> None:
    """Write the report's files (tables, answers, plots) into a new folder and swap it in
    for the previous report: a killed run leaves one whole report, never a mix of two."""

    layout = domain.layout

    def write(out: Path) -> None:
        def inside(path: Path) -> Path:  # the same file in the new folder
            return out / path.relative_to(layout.eval)

        loss = layout.loss_plot
        if loss.is_file():
            shutil.copyfile(loss, inside(layout.eval_loss_plot))
        first = next(iter(report.conditions.values()))
        plot_accuracy(first, inside(layout.accuracy_plot))
        if report.calibration.get("curve"):
            threshold = report.calibration["gate"]["threshold"]
            plot_gate(report.calibration["curve"], threshold, inside(layout.gate_plot))
        answers = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write_text(inside(layout.eval_answers), answers)
        atomic_write_text(inside(layout.eval_report), markdown(report, with_loss=loss.is_file()))
        atomic_write_json(inside(layout.eval_report_json), report_dict(report))

    replace_dir(report.path, write)

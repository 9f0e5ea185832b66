"""Training metrics: JSONL always, TensorBoard or Weights & Biases when installed and asked
for, and a loss-curve PNG."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from domainkit.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


def write_jsonl(history: list[dict], path: Path) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def external_loggers(names: list[str], log_dir: Path, run_name: str) -> list[Callable]:
    """Loggers for the requested backends that are installed; missing ones are reported."""
    loggers: list[Callable] = []
    for name in names:
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(log_dir / "tensorboard" / run_name))
                loggers.append(
                    lambda row, w=writer: [
                        w.add_scalar(k, v, row["step"]) for k, v in row.items() if k != "step"
                    ]
                )
            elif name == "wandb":
                import wandb

                wandb.init(project="domainkit", name=run_name, dir=str(log_dir))
                loggers.append(lambda row: wandb.log(row, step=row["step"]))
        except ImportError:
            log.warning("%s logging asked for but not installed (pip install %s)", name, name)
    return loggers


def plot_loss(history: list[dict], path: Path, title: str) -> Path | None:
    """Training and validation loss against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in history if "val_loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation")
    ax.set(xlabel="optimizer step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path

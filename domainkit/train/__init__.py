"""Fine-tuning: chat data with assistant-only labels, packing, a small LoRA/QLoRA loop,
merge and export."""

from domainkit.train.pipeline import TrainReport, run_train

__all__ = ["TrainReport", "run_train"]

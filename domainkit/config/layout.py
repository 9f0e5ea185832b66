"""Every path of a build, named in one place: the build folder (``Layout``), a training
phase and its checkpoints, an index or dataset version, the bundle and an export. Stages,
the runtime, eval and bundles ask these rather than spelling paths of their own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domainkit.utils.lock import LOCK_FILE


@dataclass(frozen=True)
class Layout:
    """Every path of a build folder, named in this one place: stages, the runtime, eval and
    bundles ask it rather than spelling paths of their own."""

    root: Path  # the build folder, BUILD

    @property
    def ingested(self) -> Path:
        """The documents as read by the ingest stage (``IngestResult.save``)."""
        return self.root / "ingest" / "documents.jsonl"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def synth(self) -> Path:
        return self.root / "synth"

    @property
    def synth_pointer(self) -> Path:
        """Names the published synth dataset version (``utils.versioned``)."""
        return self.synth / "CURRENT"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def adapter(self) -> Path:
        return self.train / "adapter"

    @property
    def loss_plot(self) -> Path:
        return self.train / "loss.png"

    @property
    def memory_choices(self) -> Path:
        """The run's checkpointing and optimizer choices, kept for a resumed run."""
        return self.train / "choices.json"

    @property
    def train_run(self) -> Path:
        """The fingerprint of the training run the checkpoints belong to (resume)."""
        return self.train / "run.json"

    def phase_done(self, phase: str) -> Path:
        """Marks a training phase (``pretrain``, ``sft``, ``preference``) as finished."""
        return self.phase(phase).done

    @property
    def train_summary(self) -> Path:
        """What the last training run did (``train.pipeline.summary_dict``)."""
        return self.train / "summary.json"

    @property
    def train_metrics(self) -> Path:
        """Every phase's logged steps, one JSON object a line."""
        return self.train / "metrics.jsonl"

    @property
    def calibration(self) -> Path:
        return self.root / "runtime" / "calibration.json"

    @property
    def reviewed(self) -> Path:
        """The reviewed questions the runtime answers repeats of (``answer.memory``)."""
        return self.root / "runtime" / "reviewed.json"

    @property
    def reviewed_samples(self) -> Path:
        """The reviewed questions as training samples (``feedback.samples``)."""
        return self.root / "reviews" / "samples.jsonl"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def eval_report(self) -> Path:
        return self.eval / "report.md"

    @property
    def eval_report_json(self) -> Path:
        return self.eval / "report.json"

    @property
    def eval_answers(self) -> Path:
        return self.eval / "answers.jsonl"

    @property
    def accuracy_plot(self) -> Path:
        return self.eval / "accuracy.png"

    @property
    def gate_plot(self) -> Path:
        """The gate's answered / refused trade-off by threshold."""
        return self.eval / "gate.png"

    @property
    def eval_loss_plot(self) -> Path:
        """The report's copy of training's loss plot."""
        return self.eval / "loss.png"

    @property
    def eval_comparison(self) -> Path:
        """The base model's comparison rows, reused while nothing they depend on changed."""
        return self.root / "eval-comparison.json"

    @property
    def eval_resume(self) -> Path:
        """Model replies of an evaluation in progress (deleted when its report is written)."""
        return self.root / "eval-replies.sqlite"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def build_record(self) -> Path:
        return self.root / "build.json"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def synth_calls(self) -> Path:
        """The teacher's replies by request, so a rerun asks only for what is new."""
        return self.synth / "calls.sqlite"

    def phase(self, name: str) -> PhaseLayout:
        """A training phase's folder (``pretrain``, ``sft``, ``preference``)."""
        return PhaseLayout(self.train / name)

    @property
    def bundle_files(self) -> BundleLayout:
        return BundleLayout(self.bundle)


@dataclass(frozen=True)
class PhaseLayout:
    """One training phase's folder."""

    root: Path

    @property
    def best(self) -> Path:
        """The adapter of the phase's best validation loss."""
        return self.root / "best"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, step: int) -> CheckpointLayout:
        return CheckpointLayout(self.checkpoints / f"step-{step:06d}")

    def completed(self) -> list[CheckpointLayout]:
        """Checkpoints whose completeness marker was written, oldest first."""
        found = sorted(self.checkpoints.glob("step-*"))
        return [c for c in map(CheckpointLayout, found) if c.state.is_file()]

    @property
    def done(self) -> Path:
        return self.root / "done.json"


@dataclass(frozen=True)
class CheckpointLayout:
    """A training checkpoint: the trainable weights, the optimizer's state, and the step
    state written last as its completeness marker."""

    root: Path

    @property
    def trainable(self) -> Path:
        return self.root / "trainable.pt"

    @property
    def training(self) -> Path:
        return self.root / "training.pt"

    @property
    def state(self) -> Path:
        return self.root / "state.json"


@dataclass(frozen=True)
class IndexVersion:
    """The files of one index version (``retrieval.store``); the manifest is written last."""

    root: Path

    @property
    def chunks(self) -> Path:
        return self.root / "chunks.jsonl"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.npy"

    @property
    def dense(self) -> Path:
        return self.root / "dense.faiss"

    @property
    def bm25(self) -> Path:
        return self.root / "bm25"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


@dataclass(frozen=True)
class DatasetVersion:
    """The files of one synth dataset version (``synth.dataset``); the summary is last."""

    root: Path

    @property
    def dataset(self) -> Path:
        """The ``datasets.DatasetDict`` (``load_from_disk``)."""
        return self.root / "dataset"

    def split(self, name: str) -> Path:
        return self.root / f"{name}.jsonl"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


@dataclass(frozen=True)
class BundleLayout:
    """What ``build`` ships in ``BUILD/bundle``."""

    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def report(self) -> Path:
        """The evaluation report."""
        return self.root / "report.md"

    @property
    def resolved_config(self) -> Path:
        return self.root / "domain.resolved.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "bundle.json"

    @property
    def card(self) -> Path:
        return self.root / "README.md"


@dataclass(frozen=True)
class ExportLayout:
    """What ``domainkit export`` writes (``BUILD/export`` or the folder given)."""

    root: Path

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def merged(self) -> Path:
        return self.root / "merged"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def modelfile(self) -> Path:
        return self.root / "Modelfile"

    def gguf(self, gguf_type: str) -> Path:
        return self.root / f"model.{gguf_type}.gguf"


def card_of(folder: Path) -> Path:
    """The Hugging Face card of an adapter, model or dataset folder."""
    return folder / "README.md"


def adapter_config(folder: Path) -> Path:
    """peft's config of an adapter folder: its presence means the adapter is complete."""
    return folder / "adapter_config.json"


def adapter_weights(folder: Path) -> Path:
    """peft's weights of an adapter folder."""
    return folder / "adapter_model.safetensors"

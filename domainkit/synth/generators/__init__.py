"""Sample generators, by name: raft, near_miss, refusal, self_chat.

A generator turns seed chunks into candidate samples through the teacher, rejecting what
fails its checks into the context's filter log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from domainkit.config.schema import SynthConfig
from domainkit.ingest import Chunk
from domainkit.registry import Registry
from domainkit.synth.context import SynthContext
from domainkit.synth.sample import Sample


@dataclass(frozen=True)
class GeneratorSpec:
    """A generator and what one seed chunk yields, for planning and progress.

    Attributes:
        run: ``(context, seed chunks, target sample count) -> samples``.
        samples_per_seed: Samples one seed chunk yields when every check passes.
        calls_per_seed: Teacher calls one seed chunk costs at most.
    """

    run: Callable[[SynthContext, list[Chunk], int], list[Sample]]
    samples_per_seed: Callable[[SynthConfig], float]
    calls_per_seed: Callable[[SynthConfig], float]


GENERATORS: Registry[GeneratorSpec] = Registry("generator", "domainkit.generators")

from domainkit.synth.generators import near_miss, raft, refusal, self_chat  # noqa: E402,F401

"""Synthetic instruction data: teachers, generators, filters and the dataset they produce."""

from domainkit.synth.pipeline import SynthReport, run_synth

__all__ = ["SynthReport", "run_synth"]

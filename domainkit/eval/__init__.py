"""Evaluation: what tuning and retrieval each bring, and calibration of the runtime policy."""

from domainkit.eval.runner import CONDITIONS, EvalReport, run_eval

__all__ = ["CONDITIONS", "EvalReport", "run_eval"]

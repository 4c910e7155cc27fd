"""Sampling + grading on held-out problems: avg@n, unbiased pass@k, maj@n (``rlvr eval`` and validation)."""
from rlvr_cli.eval.metrics import majority_vote, pass_at_k, summarize_samples
from rlvr_cli.eval.evaluate import Sample, sample_and_grade

__all__ = ["pass_at_k", "majority_vote", "summarize_samples", "Sample", "sample_and_grade"]

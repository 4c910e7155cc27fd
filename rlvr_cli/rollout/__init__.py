"""Stage 2: prompts x G -> Rollouts (sampling, by the engine ``rollout.engine`` names: ``engines.py``,
``vllm_engine.py``), where responses end (``stopping.py``), the per-token statistics of a policy on
them (``logprobs.py``) and the engine/trainer mismatch correction (``correction.py``)."""
from rlvr_cli.rollout.generate import generate_rollouts, sampling_kwargs
from rlvr_cli.rollout.logprobs import entropy_from_logits, policy_token_stats

__all__ = ["generate_rollouts", "sampling_kwargs", "policy_token_stats", "entropy_from_logits"]

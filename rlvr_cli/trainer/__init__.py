"""Stages 6–7 and the run around them: engine (optimizer step), checkpoints, the GRPO loop."""

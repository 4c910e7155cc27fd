"""Plain GRPO / DAPO / Dr.GRPO with no entropy control: every knob lives in the ``algo`` group."""
from rlvr_cli.methods.base import Method, MethodConfig, register_method


@register_method("baseline", config=MethodConfig)
class Baseline(Method):
    """The reference point of every comparison: the shared clipped objective, unchanged."""

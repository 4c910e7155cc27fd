"""Entropy-control methods, one file each, registered by name. Imported explicitly so grep finds them."""
from rlvr_cli.methods.base import (
    Method,
    MethodConfig,
    StepContext,
    TokenNeeds,
    build_method,
    method_names,
    register_method,
)
from rlvr_cli.methods import baseline  # noqa: F401  (registers)
from rlvr_cli.methods import entropy_bonus  # noqa: F401  (registers)
from rlvr_cli.methods import clip_cov  # noqa: F401  (registers)
from rlvr_cli.methods import kl_cov  # noqa: F401  (registers)
from rlvr_cli.methods import siren  # noqa: F401  (registers)
from rlvr_cli.methods import rsi_s  # noqa: F401  (registers)
from rlvr_cli.methods import dlogp  # noqa: F401  (registers)
from rlvr_cli.methods import high_entropy  # noqa: F401  (registers)

__all__ = ["Method", "MethodConfig", "StepContext", "TokenNeeds", "build_method", "method_names", "register_method"]

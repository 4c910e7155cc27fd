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

__all__ = ["Method", "MethodConfig", "StepContext", "TokenNeeds", "build_method", "method_names", "register_method"]

"""Constructor checks shared by the units: a clear error before anything is built.

A component whose constructor raises is marked used (``_MustUse__silence``),
so Amaranth does not add an "elaboratable created but never used" warning to
the user's error.
"""

from __future__ import annotations

from ..arch.config import AcceleratorConfig

__all__ = ["require_config", "require_system_config", "require_positive", "refuse"]


def refuse(component, exc: Exception):
    """Raise *exc* from *component*'s constructor."""
    component._MustUse__silence = True
    raise exc


def require_config(config, component=None) -> AcceleratorConfig:
    """*config* if it is an :class:`AcceleratorConfig`, else a ``TypeError``."""
    if not isinstance(config, AcceleratorConfig):
        exc = TypeError(f"config must be an AcceleratorConfig, not {config!r}")
        if component is not None:
            refuse(component, exc)
        raise exc
    return config


def require_system_config(config, component) -> AcceleratorConfig:
    """*config* if the whole system can be built from it (:meth:`AcceleratorConfig.check_system`)."""
    require_config(config, component)
    try:
        config.check_system()
    except ValueError as exc:
        refuse(component, exc)
    return config


def require_positive(component, **values) -> None:
    """Every keyword a positive int, else a ``ValueError`` naming it."""
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            refuse(component, ValueError(f"{name} must be a positive int, not {v!r}"))

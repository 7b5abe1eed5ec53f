"""The array unit of each dataflow: the table the accelerator picks its :class:`~systolic.hw.array_unit.ArrayUnit`
from (no dataflow tests elsewhere in the system)."""

from __future__ import annotations

from ..arch.config import DATAFLOWS, AcceleratorConfig
from .array_unit import ArrayUnit
from .array_unit_os import OSArrayUnit
from .array_unit_ws import WSArrayUnit
from .params import require_config

__all__ = ["ARRAY_UNITS", "array_unit"]

#: Dataflow -> its array unit.
ARRAY_UNITS: dict[str, type[ArrayUnit]] = {"ws": WSArrayUnit, "os": OSArrayUnit}
assert set(ARRAY_UNITS) == set(DATAFLOWS)


def array_unit(config: AcceleratorConfig) -> ArrayUnit:
    """The :class:`~systolic.hw.array_unit.ArrayUnit` of ``config.dataflow``."""
    return ARRAY_UNITS[require_config(config).dataflow](config=config)

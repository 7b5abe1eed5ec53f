"""The accelerator configuration: one frozen object every other part derives from.

:class:`AcceleratorConfig` is the single source of truth for the hardware
generator (``systolic.hw``), the compiler (``systolic.compiler``), the RTL
simulation (``systolic.sim``) and the reports. Widths and line counts that
follow from the parameters are properties here (and the configs of the
array and the requantizer lanes inside the system are derived here), so no
other module re-derives them.

Plain Python: this module imports neither amaranth nor cocotb.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..golden.limits import MAX_CONFIG_BYTES, loads_json, short_repr
from ..golden.pe_weights import PE_KINDS
from ..golden.qtypes import ROUNDING_MODES, QType
from .isa import INSTR_BYTES
from .machine import DATAFLOWS, SizeDerived

__all__ = ["AcceleratorConfig", "PRESETS", "load_config", "DATAFLOWS", "PE_KINDS", "SYSTEM_MAX_BITS",
           "LANE_SHIFT_BITS", "LANE_MIN_ACC_BITS"]

#: Widest operand / output type of the system: every element travels as one byte.
SYSTEM_MAX_BITS = 8
#: Shift width of the system's requantizer lanes: the ISA's int8 shift clamped into -64..63 (exact, see
#: :attr:`AcceleratorConfig.lane_config`).
LANE_SHIFT_BITS = 7
#: The ISA's bias is int32: the system's lanes add in at least 33 bits.
LANE_MIN_ACC_BITS = 32

_ROUNDING_TAG = {"half_even": "he", "half_up": "hu"}


def _check_int(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, not {value}")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {value!r}")


def _check_choice(name, value, choices):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class AcceleratorConfig(SizeDerived):
    """Parameters of one accelerator instance.

    Parameters
    ----------
    rows, cols : int
        Systolic array size, 1..64 each. In the weight-stationary dataflow
        ``rows`` is the reduction (K) dimension of one pass and ``cols`` the
        output channels (N); in the output-stationary dataflow ``rows`` is the
        number of output rows (M) and ``cols`` the output channels (N).
    dataflow : {"ws", "os"}
        Weight-stationary or output-stationary.
    pe : {"multiplier", "shift"}
        Processing element: multiply-accumulate, or shift-accumulate for power-of-two weights (``0`` and
        ``+-2**e``, ``e <= w_bits - 2``, stored as sign / nonzero / exponent words:
        :mod:`systolic.golden.pe_weights`); needs ``w_signed``. Same latency and results.
    in_bits, w_bits : int
        Activation / weight widths, 2..16.
    in_signed, w_signed : bool
        Signedness of activations / weights.
    acc_bits : int
        Accumulator width (two's complement), 8..48, at least the product width.
    out_bits : int
        Output width after requantization, 2..32.
    out_signed : bool
        Signedness of the output.
    rounding : {"half_even", "half_up"}
        Rounding mode of the shift-requantize units (see ``golden.round_shift``).
    per_channel_shift : bool
        One shift per output channel (``cols`` shifts) instead of one per tensor.
    shift_bits : int
        Width of the signed shift field, 2..7 (shifts ``-2**(shift_bits-1)``
        .. ``2**(shift_bits-1)-1``; the golden model accepts ``|shift| <= 62``).
    spad_a_bytes, spad_w_bytes : int
        Activation / weight scratchpad sizes in bytes (used by the system level).
    acc_entries : int
        Accumulator buffer depth in rows of ``cols`` accumulators.
    bus_bytes : int
        External memory port width in bytes, a power of two 1..64.

    Raises
    ------
    TypeError
        A parameter of the wrong kind.
    ValueError
        A parameter out of range, e.g. ``"rows must be between 1 and 64, not 0"``.
    """

    rows: int = 8
    cols: int = 8
    dataflow: str = "ws"
    pe: str = "multiplier"
    in_bits: int = 8
    in_signed: bool = True
    w_bits: int = 8
    w_signed: bool = True
    acc_bits: int = 32
    out_bits: int = 8
    out_signed: bool = True
    rounding: str = "half_even"
    per_channel_shift: bool = True
    shift_bits: int = 6
    spad_a_bytes: int = 16384
    spad_w_bytes: int = 16384
    acc_entries: int = 512
    bus_bytes: int = 8

    def __post_init__(self):
        _check_int("rows", self.rows, 1, 64)
        _check_int("cols", self.cols, 1, 64)
        _check_choice("dataflow", self.dataflow, DATAFLOWS)
        _check_choice("pe", self.pe, PE_KINDS)
        _check_int("in_bits", self.in_bits, 2, 16)
        _check_bool("in_signed", self.in_signed)
        _check_int("w_bits", self.w_bits, 2, 16)
        _check_bool("w_signed", self.w_signed)
        _check_int("acc_bits", self.acc_bits, 8, 48)
        _check_int("out_bits", self.out_bits, 2, 32)
        _check_bool("out_signed", self.out_signed)
        _check_choice("rounding", self.rounding, ROUNDING_MODES)
        _check_bool("per_channel_shift", self.per_channel_shift)
        _check_int("shift_bits", self.shift_bits, 2, 7)
        _check_int("spad_a_bytes", self.spad_a_bytes, 16, 1 << 24)
        _check_int("spad_w_bytes", self.spad_w_bytes, 16, 1 << 24)
        _check_int("acc_entries", self.acc_entries, 1, 1 << 20)
        _check_int("bus_bytes", self.bus_bytes, 1, 64)
        if self.bus_bytes & (self.bus_bytes - 1):
            raise ValueError(f"bus_bytes must be a power of two between 1 and 64, not {self.bus_bytes}")
        if self.acc_bits < self.product_bits:
            raise ValueError(
                f"acc_bits must be at least the product width {self.product_bits}, not {self.acc_bits}"
            )
        if self.out_bits > self.acc_bits:
            raise ValueError(f"out_bits must be at most acc_bits ({self.acc_bits}), not {self.out_bits}")
        if self.pe == "shift" and not self.w_signed:
            raise ValueError("pe 'shift' needs w_signed=True: its weights are 0 and +-2**e, the word has a sign bit")

    # -- derived widths ---------------------------------------------------------------------------

    @property
    def product_bits(self) -> int:
        """Width of one signed product ``a * w`` (exact, no overflow)."""
        return self.in_bits + self.w_bits + (0 if (self.in_signed and self.w_signed) else 1)

    @property
    def psum_bits(self) -> int:
        """Width of the partial sums in the array (= ``acc_bits``, two's complement, wraps)."""
        return self.acc_bits

    @property
    def in_range(self) -> tuple[int, int]:
        return QType.range_of(self.in_bits, self.in_signed)

    @property
    def w_range(self) -> tuple[int, int]:
        return QType.range_of(self.w_bits, self.w_signed)

    @property
    def out_range(self) -> tuple[int, int]:
        return QType.range_of(self.out_bits, self.out_signed)

    @property
    def acc_range(self) -> tuple[int, int]:
        return QType.range_of(self.acc_bits, True)

    @property
    def shift_range(self) -> tuple[int, int]:
        """Shifts the requantizer accepts: the signed ``shift_bits`` range."""
        return QType.range_of(self.shift_bits, True)

    @property
    def max_product(self) -> int:
        """Largest ``|a * w|`` over the operand ranges."""
        a = max(abs(v) for v in self.in_range)
        w = max(abs(v) for v in self.w_range)
        return a * w

    @property
    def max_safe_k(self) -> int:
        """Largest reduction length K whose worst-case sum provably fits ``acc_bits``.

        ``K * max|a*w| <= 2**(acc_bits-1) - 1`` (the worst case, all products at
        the extreme of one sign, bounds every partial sum too). Bias is not
        included: the requantizer adds it in ``acc_bits + 1`` bits.
        """
        return (2 ** (self.acc_bits - 1) - 1) // self.max_product

    @property
    def shift_lanes(self) -> int:
        """Number of shift values the requantizer takes: ``cols`` or 1."""
        return self.cols if self.per_channel_shift else 1

    @property
    def name(self) -> str:
        """Short identifier of the datapath parameters, used as Verilog module name.

        Example: ``systolic_ws_8x8_i8s_w8s_a32_o8s_he``: dataflow, rows x cols,
        input / weight / accumulator / output widths (``s`` signed, ``u``
        unsigned), rounding (``he`` half_even, ``hu`` half_up); a ``_pt`` suffix
        marks a per-tensor shift, ``_sN`` a shift field other than 6 bits and
        ``_shiftpe`` the shift PE (the default multiplier PE adds nothing, so
        names of existing configs stay). Memory sizes do not change the
        datapath and are not part of the name.
        """
        def t(bits, signed):
            return f"{bits}{'s' if signed else 'u'}"

        pt = "" if self.per_channel_shift else "_pt"
        sh = "" if self.shift_bits == 6 else f"_s{self.shift_bits}"
        pe = "" if self.pe == "multiplier" else f"_{self.pe}pe"
        return (
            f"systolic_{self.dataflow}_{self.rows}x{self.cols}_i{t(self.in_bits, self.in_signed)}"
            f"_w{t(self.w_bits, self.w_signed)}_a{self.acc_bits}_o{t(self.out_bits, self.out_signed)}"
            f"_{_ROUNDING_TAG[self.rounding]}{pt}{sh}{pe}"
        )

    # -- the system's geometry ------------------------------------------------------------------

    @property
    def a_lines(self) -> int:
        """Lines of scratchpad A: ``rows`` activations each (one K chunk of one GEMM row)."""
        return self.spad_a_bytes // self.rows

    @property
    def w_lines(self) -> int:
        """Lines of scratchpad W: ``cols`` weights each (one K row of an N chunk)."""
        return self.spad_w_bytes // self.cols

    @property
    def acc_lines(self) -> int:
        """Lines of the accumulator buffer: ``cols`` signed ``acc_bits`` values each."""
        return self.acc_entries

    @property
    def dma_buffer_bytes(self) -> int:
        """Bytes one DMA gather delivers at most: an instruction, an A or W line, a LOADQ block."""
        return max(INSTR_BYTES, self.rows, self.cols, self.loadq_bytes)

    @property
    def array_config(self) -> "AcceleratorConfig":
        """The array inside the system: operands one bit wider and signed.

        A LOAD's ``unsigned`` flag decides per transfer whether bytes are signed
        or unsigned (ReLU outputs are unsigned), so scratchpad elements and the
        array operands are ``bits + 1`` wide signed values, which hold both.
        A shift PE's weight operand is its ``w_bits``-bit word instead (bits,
        not a number: the array takes the low ``w_bits`` bits of the scratchpad
        element, whichever way the byte was loaded). The partial sums are as
        wide for both PE kinds.
        """
        a, w = self.in_bits + 1, self.w_bits + 1
        return self.replace(in_bits=a, in_signed=True, w_bits=w if self.pe == "multiplier" else self.w_bits,
                            w_signed=True, acc_bits=max(self.acc_bits, a + w))

    @property
    def lane_config(self) -> "AcceleratorConfig":
        """The requantizer lanes inside the system.

        The ISA gives every lane an int32 bias and an int8 shift and lets each
        STORE choose the output width (``bits``) and signedness at run time. The
        lanes therefore add in at least 33 bits, take a 7-bit shift (the int8
        shift is clamped into -64..63, which changes no result: a right shift by
        ``>= acc_bits + 1`` already gives 0 and a left shift by ``> out_bits``
        already saturates) and saturate to the signed ``out_bits + 1`` range,
        which contains both the signed and the unsigned ``out_bits`` ranges; the
        STORE's own range is applied after them (saturating twice to nested
        ranges equals saturating once to the inner one).
        """
        return self.replace(acc_bits=max(self.acc_bits, LANE_MIN_ACC_BITS), out_bits=self.out_bits + 1,
                            out_signed=True, shift_bits=LANE_SHIFT_BITS, per_channel_shift=True)

    def check_system(self) -> None:
        """Raise ``ValueError`` unless this config can be built as the whole accelerator system.

        The GEMM core takes every config; the system moves bytes, so operands and
        outputs are at most :data:`SYSTEM_MAX_BITS` wide, and its scratchpads must
        hold one line of A and one weight tile.
        """
        for name in ("in_bits", "w_bits", "out_bits"):
            if getattr(self, name) > SYSTEM_MAX_BITS:
                raise ValueError(f"{name} must be at most {SYSTEM_MAX_BITS} for the system (one-byte containers), "
                                 f"not {getattr(self, name)}")
        if self.a_lines < 1:
            raise ValueError(f"spad_a_bytes must hold at least one {self.rows}-element line, not {self.spad_a_bytes}")
        if self.w_lines < self.rows:
            raise ValueError(f"spad_w_bytes must hold one {self.rows}x{self.cols} weight tile, not {self.spad_w_bytes}")

    # -- construction helpers ---------------------------------------------------------------------

    def replace(self, **changes) -> "AcceleratorConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dict; ``pe`` only when it is not the default ``"multiplier"``, so the JSON of
        every config without the option (saved files, build keys, sweep caches) stays as it was."""
        d = dataclasses.asdict(self)
        if self.pe == "multiplier":
            del d["pe"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, obj) -> "AcceleratorConfig":
        if not isinstance(obj, dict):
            raise TypeError(f"an accelerator config must be a JSON object, not {short_repr(obj)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise ValueError(
                f"unknown accelerator config key(s): {', '.join(unknown)} "
                f"(known keys: {', '.join(sorted(known))})"
            )
        return cls(**obj)

    @classmethod
    def from_json(cls, text) -> "AcceleratorConfig":
        """Parse a JSON config strictly: at most ``MAX_CONFIG_BYTES``, nesting at most ``MAX_JSON_DEPTH``, no
        duplicate keys; the values' types are then checked exactly (no coercion) by the constructor."""
        return cls.from_dict(loads_json(text, "accelerator config", MAX_CONFIG_BYTES))

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path) -> "AcceleratorConfig":
        """Read a JSON config file; errors name the file (``TypeError`` for a wrong kind, ``ValueError`` else)."""
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > MAX_CONFIG_BYTES:
                    raise ValueError(f"accelerator config is {size} bytes, above the limit of {MAX_CONFIG_BYTES} "
                                     "bytes (MAX_CONFIG_BYTES)")
                data = fh.read(MAX_CONFIG_BYTES + 1)  # never more than the limit, even if the file grows
            return cls.from_json(data)
        except (TypeError, ValueError) as exc:
            raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{path}: {exc}") from None

    @classmethod
    def preset(cls, name: str) -> "AcceleratorConfig":
        if not isinstance(name, str):
            raise TypeError(f"preset must be a str, not {name!r}")
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {name!r}")
        return PRESETS[name]


#: Named configurations. "default" is the reference 8x8 weight-stationary int8 design.
PRESETS: dict[str, AcceleratorConfig] = {
    "tiny": AcceleratorConfig(rows=2, cols=2, dataflow="ws", spad_a_bytes=1024, spad_w_bytes=1024,
                              acc_entries=64, bus_bytes=4),
    "small": AcceleratorConfig(rows=4, cols=4, dataflow="os", spad_a_bytes=4096, spad_w_bytes=4096,
                               acc_entries=128, bus_bytes=4),
    "default": AcceleratorConfig(),
    "large": AcceleratorConfig(rows=16, cols=16, dataflow="ws", spad_a_bytes=65536,
                               spad_w_bytes=65536, acc_entries=1024, bus_bytes=16),
}


def load_config(name_or_path) -> AcceleratorConfig:
    """A preset name (``tiny``, ``small``, ``default``, ``large``) or a JSON file path."""
    if isinstance(name_or_path, AcceleratorConfig):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"config must be a preset name or a path, not {name_or_path!r}")
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return PRESETS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(
            f"config must be a preset ({', '.join(PRESETS)}) or an existing JSON file, "
            f"not {str(name_or_path)!r}"
        )
    return AcceleratorConfig.load(path)

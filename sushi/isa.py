"""The SUSHI instruction set: the one definition of the program format (version ISA_VERSION).

The compiler writes programs with :func:`encode`; the golden model, the performance model and the
RTL sequencer read them with :func:`decode` / :data:`LAYOUTS`.  Nothing else defines a field.

Every instruction is INSTR_BYTES = 32 bytes: one little-endian 256-bit word.  The opcode is bits
[7:0]; the remaining fields of each opcode follow in the order of :data:`LAYOUTS`, packed from bit 8
upwards without gaps.  Unused high bits are zero.  See docs/isa.md for the semantics of every field.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "ISA_VERSION", "INSTR_BYTES", "PARAM_BYTES", "LUT_BYTES", "Op", "LAYOUTS", "field_slices",
    "encode", "decode", "Instr", "pack_program", "unpack_program", "requant", "pack_params",
    "unpack_params", "IsaError",
]

ISA_VERSION = 4
#: bytes of one LUT table in DRAM (indexed by the input byte read as unsigned)
LUT_BYTES = 256
INSTR_BYTES = 32
#: one requantization record per output channel: int32 bias, uint16 mult, uint8 shift, uint8 zero
PARAM_BYTES = 8


class IsaError(ValueError):
    """An instruction field is out of range or a program is malformed."""


class Op(enum.IntEnum):
    HALT = 0
    LOAD = 1      # DRAM -> activation buffer, contiguous words
    STORE = 2     # activation buffer -> DRAM, contiguous words
    CONV = 3      # dense / depthwise convolution on the PE array (also Gemm/MatMul)
    POOL = 4      # max / average pooling on the vector unit
    ADD = 5       # element-wise requantized add (residual) on the vector unit
    LOADSG = 6    # copy a run of weight tiles into Persistent Buffer slots
    LUT = 7       # element-wise int8 -> int8 table lookup (h-swish, h-sigmoid, ...)
    MUL = 8       # element-wise multiply by a per-channel vector broadcast over pixels (SE)
    SETRES = 9    # set residency entry `key`: a layer box (rows x c_res tiles) held at a PB slot
    PBKEY = 10    # the residency entry the following CONVs of this program look up (or none)


# (name, width in bits, signed) in packing order, after the 8-bit opcode.
_DIMS = [("in_h", 10, False), ("in_w", 10, False), ("out_h", 10, False), ("out_w", 10, False)]
LAYOUTS: dict[Op, list[tuple[str, int, bool]]] = {
    Op.HALT: [],
    Op.LOAD: [("buf_addr", 16, False), ("n_words", 20, False), ("dram_addr", 32, False)],
    Op.STORE: [("buf_addr", 16, False), ("n_words", 20, False), ("dram_addr", 32, False)],
    Op.CONV: [
        ("dw", 1, False),
        ("kh", 8, False), ("kw", 8, False),
        ("sh", 3, False), ("sw", 3, False),
        ("pad_top", 4, False), ("pad_left", 4, False),
        *_DIMS,
        ("cin_w", 10, False),      # input words per pixel (Cin padded / V)
        ("cout_w", 10, False),     # output words per pixel (Cout padded / V)
        ("n_groups", 10, False),   # dense: groups of R output channels; dw: groups of V channels
        ("in_addr", 16, False), ("out_addr", 16, False),
        ("clamp_lo", 8, True), ("clamp_hi", 8, True),
        ("tile_base", 24, False), ("tile_sg", 16, False),
        ("tile_sky", 12, False), ("tile_skx", 12, False),
        ("param_addr", 32, False),
    ],
    Op.POOL: [
        ("mode", 1, False),        # 0 = max, 1 = average (sum then requantize)
        ("kh", 8, False), ("kw", 8, False),
        ("sh", 3, False), ("sw", 3, False),
        ("pad_top", 4, False), ("pad_left", 4, False),
        *_DIMS,
        ("c_w", 10, False),        # words per pixel
        ("in_addr", 16, False), ("out_addr", 16, False),
        ("mult", 16, False), ("shift", 6, False),
        ("clamp_lo", 8, True), ("clamp_hi", 8, True),
    ],
    Op.ADD: [
        ("a_addr", 16, False), ("b_addr", 16, False), ("out_addr", 16, False),
        ("n_words", 20, False),
        ("mult_a", 16, False), ("mult_b", 16, False), ("shift", 6, False),
        ("clamp_lo", 8, True), ("clamp_hi", 8, True),
    ],
    Op.LOADSG: [("tile_lo", 24, False), ("n_tiles", 24, False), ("pb_slot", 24, False)],
    Op.SETRES: [("key", 8, False), ("rows", 16, False), ("c_res", 16, False), ("pb_slot", 24, False)],
    Op.PBKEY: [("key", 8, False), ("on", 1, False)],
    Op.LUT: [("in_addr", 16, False), ("out_addr", 16, False), ("n_words", 20, False), ("lut_addr", 32, False)],
    Op.MUL: [
        ("a_addr", 16, False), ("b_addr", 16, False), ("out_addr", 16, False),
        ("n_pix", 20, False), ("c_w", 10, False),
        ("mult", 16, False), ("shift", 6, False),
        ("clamp_lo", 8, True), ("clamp_hi", 8, True),
    ],
}


def field_slices(op: Op) -> dict[str, tuple[int, int, bool]]:
    """{field: (lsb, width, signed)} of one opcode; the opcode itself is bits [7:0]."""
    out, lsb = {}, 8
    for name, width, signed in LAYOUTS[op]:
        out[name] = (lsb, width, signed)
        lsb += width
    assert lsb <= INSTR_BYTES * 8, (op, lsb)
    return out


_SLICES = {op: field_slices(op) for op in Op}


@dataclass(frozen=True)
class Instr:
    op: Op
    fields: dict

    def __getattr__(self, name):
        if name.startswith("__") or name == "fields":   # copy/pickle probe before fields exist
            raise AttributeError(name)
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        return {"op": self.op.name, **self.fields}


def encode(op: Op, **fields) -> bytes:
    """Pack one instruction.  Every field of the opcode must be given and in range."""
    op = Op(op)
    sl = _SLICES[op]
    missing = set(sl) - set(fields)
    extra = set(fields) - set(sl)
    if missing or extra:
        raise IsaError(f"{op.name}: missing fields {sorted(missing)}, unknown fields {sorted(extra)}")
    word = int(op)
    for name, (lsb, width, signed) in sl.items():
        v = int(fields[name])
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
        if not lo <= v <= hi:
            raise IsaError(f"{op.name}.{name} = {v} does not fit {width} bits "
                           f"({'signed' if signed else 'unsigned'}: {lo}..{hi})")
        word |= (v & ((1 << width) - 1)) << lsb
    return word.to_bytes(INSTR_BYTES, "little")


def decode(raw: bytes) -> Instr:
    if len(raw) != INSTR_BYTES:
        raise IsaError(f"an instruction is {INSTR_BYTES} bytes, got {len(raw)}")
    word = int.from_bytes(raw, "little")
    try:
        op = Op(word & 0xFF)
    except ValueError:
        raise IsaError(f"unknown opcode {word & 0xFF}") from None
    fields = {}
    for name, (lsb, width, signed) in _SLICES[op].items():
        v = (word >> lsb) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        fields[name] = v
    return Instr(op, fields)


def pack_program(instrs: list[bytes]) -> bytes:
    return b"".join(instrs)


def unpack_program(blob: bytes) -> list[Instr]:
    """Decode instructions up to and including the first HALT."""
    out = []
    for i in range(0, len(blob) - INSTR_BYTES + 1, INSTR_BYTES):
        ins = decode(blob[i:i + INSTR_BYTES])
        out.append(ins)
        if ins.op == Op.HALT:
            return out
    raise IsaError("program has no HALT")


def pack_params(bias, mult, shift) -> bytes:
    """Requantization records, one per output channel (see docs/isa.md)."""
    out = bytearray()
    for b, m, s in zip(bias, mult, shift):
        if not (-(1 << 31) <= int(b) < (1 << 31) and 0 <= int(m) < (1 << 16) and 0 <= int(s) < 64):
            raise IsaError(f"requant record out of range: bias={b} mult={m} shift={s}")
        out += struct.pack("<iHBB", int(b), int(m), int(s), 0)
    return bytes(out)


def unpack_params(raw: bytes):
    import numpy as np
    rec = np.frombuffer(raw, dtype=np.dtype([("bias", "<i4"), ("mult", "<u2"), ("shift", "u1"), ("z", "u1")]))
    return rec["bias"].astype(np.int64), rec["mult"].astype(np.int64), rec["shift"].astype(np.int64)


def requant(x, mult, shift, lo=-128, hi=127):
    """The one requantization rule, shared by the compiler, golden model and RTL.

    y = clamp((x * mult + (1 << (shift - 1))) >> shift, lo, hi)   for shift >= 1
    y = clamp(x * mult, lo, hi)                                    for shift == 0
    with '>>' an arithmetic (flooring) shift: round half up (towards +inf).  x is the int32
    accumulator (plus bias), mult an unsigned 16-bit integer, the product exact in 48 bits.
    """
    import numpy as np
    x = np.asarray(x, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    p = x * mult
    rnd = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    y = np.right_shift(p + rnd, shift)
    return np.clip(y, lo, hi)

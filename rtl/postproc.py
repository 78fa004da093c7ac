"""Bias, requantization and clamp of V lanes per cycle: the one rule of docs/isa.md."""
from amaranth.hdl import Module, Signal, Mux, Const, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig

__all__ = ["Postproc", "PostprocSignature", "LATENCY"]

#: cycles from an input beat to its output beat
LATENCY = 3


class PostprocSignature(wiring.Signature):
    """One beat into the post-processor (producer view): V lanes of accumulator, per-lane
    bias/mult/shift, the clamp bounds and a ``tag`` (the destination buffer word)."""

    def __init__(self, *, lanes: int):
        self.lanes = lanes
        super().__init__({
            "valid": Out(1), "acc": Out(32 * lanes), "bias": Out(32 * lanes),
            "mult": Out(16 * lanes), "shift": Out(6 * lanes),
            "lo": Out(signed(8)), "hi": Out(signed(8)), "tag": Out(16),
        })

    def __eq__(self, other):
        return type(other) is PostprocSignature and other.lanes == self.lanes

    def __repr__(self):
        return f"PostprocSignature(lanes={self.lanes})"


class Postproc(wiring.Component):
    """y = clamp(((acc + bias) mod 2**32) * mult + round) >> shift, lo, hi) per lane.

    ``acc + bias`` wraps to int32 (the hardware's 32-bit adder, like the golden model); the
    product is exact; ``>>`` is arithmetic with round half up (``1 << (shift-1)`` added when
    shift >= 1).  Fully pipelined, LATENCY cycles, never stalls; ``busy`` while any beat is in
    flight."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        V = cfg.pe_cols
        super().__init__({
            "i": In(PostprocSignature(lanes=V)),
            "o_valid": Out(1), "o_data": Out(8 * V), "o_tag": Out(16), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.cfg.pe_cols
        v1, v2 = Signal(), Signal()
        t1, t2 = Signal(16), Signal(16)
        lo1, hi1, lo2, hi2 = (Signal(signed(8)) for _ in range(4))
        m.d.sync += [v1.eq(self.i.valid), v2.eq(v1), self.o_valid.eq(v2),
                     t1.eq(self.i.tag), t2.eq(t1), self.o_tag.eq(t2),
                     lo1.eq(self.i.lo), hi1.eq(self.i.hi), lo2.eq(lo1), hi2.eq(hi1)]
        m.d.comb += self.busy.eq(v1 | v2 | self.o_valid)
        for j in range(V):
            acc = self.i.acc[32 * j:32 * j + 32].as_signed()
            bias = self.i.bias[32 * j:32 * j + 32].as_signed()
            x = Signal(signed(32), name=f"x{j}")
            mult1 = Signal(16, name=f"mult{j}")
            sh1, sh2 = Signal(6, name=f"sh1_{j}"), Signal(6, name=f"sh2_{j}")
            p = Signal(signed(49), name=f"p{j}")
            m.d.sync += [x.eq(acc + bias), mult1.eq(self.i.mult[16 * j:16 * j + 16]),
                         sh1.eq(self.i.shift[6 * j:6 * j + 6]),
                         p.eq(x * mult1), sh2.eq(sh1)]
            rnd = (Const(1, 64) << sh2)[1:]
            q = Signal(signed(66), name=f"q{j}")
            m.d.comb += q.eq((p + rnd) >> sh2)
            y = Mux(q < lo2, lo2, Mux(q > hi2, hi2, q[:8]))
            m.d.sync += self.o_data[8 * j:8 * j + 8].eq(y)
        return m

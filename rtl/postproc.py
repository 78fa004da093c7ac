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
    flight.  ``stable_bounds``: ``lo``/``hi`` do not change while a beat is in flight (SushiAccel:
    they are instruction fields, and an instruction ends only when the post-processor is idle), so
    they are used where needed instead of travelling down the pipeline."""

    def __init__(self, cfg: AccelConfig, stable_bounds: bool = False):
        self.cfg = cfg
        self.stable_bounds = stable_bounds
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
                     t1.eq(self.i.tag), t2.eq(t1), self.o_tag.eq(t2)]
        if self.stable_bounds:
            m.d.comb += [lo2.eq(self.i.lo), hi2.eq(self.i.hi)]
        else:
            with m.If(self.i.valid):
                m.d.sync += [lo1.eq(self.i.lo), hi1.eq(self.i.hi)]
            with m.If(v1):
                m.d.sync += [lo2.eq(lo1), hi2.eq(hi1)]
        m.d.comb += self.busy.eq(v1 | v2 | self.o_valid)
        for j in range(V):
            acc = self.i.acc[32 * j:32 * j + 32].as_signed()
            bias = self.i.bias[32 * j:32 * j + 32].as_signed()
            x = Signal(signed(32), name=f"x{j}")
            mult1 = Signal(16, name=f"mult{j}")
            sh1, sh2 = Signal(6, name=f"sh1_{j}"), Signal(6, name=f"sh2_{j}")
            p = Signal(signed(48), name=f"p{j}")
            # the datapath registers only load with a beat (o_data matters only with o_valid;
            # also less work per cycle in simulation)
            with m.If(self.i.valid):
                m.d.sync += [x.eq(acc + bias), mult1.eq(self.i.mult[16 * j:16 * j + 16]),
                             sh1.eq(self.i.shift[6 * j:6 * j + 6])]
            with m.If(v1):
                m.d.sync += [p.eq(x * mult1), sh2.eq(sh1)]
            # round half up folded into the shift: with t = (2p) >> sh (flooring),
            # q = (p + (1 << (sh-1))) >> sh = (t + 1) >> 1 for every sh in 0..63 (sh = 0: t = 2p).
            # Only sat_10(t) matters (|t| >= 512 saturates q to int8 the same way), so the shifter
            # narrows stage by stage (largest shift first): after the stage of 2**k only
            # 10 + 2**k - 1 bits are kept, and a value that no longer fits that width saturates.
            qs = Signal(signed(8), name=f"qs{j}")
            v = Signal(signed(49), name=f"t0_{j}")
            m.d.comb += v.eq(p << 1)
            ok = Const(1, 1)
            for k in (5, 4, 3, 2, 1, 0):
                wk = 10 + (1 << k) - 1
                sv = Mux(sh2[k], v >> (1 << k), v)
                nv = Signal(signed(wk), name=f"t{6 - k}_{j}")
                m.d.comb += nv.eq(sv)
                hi_bits = sv[wk - 1:len(v)]
                ok = ok & ((hi_bits == 0) | (hi_bits == (1 << len(hi_bits)) - 1))
                v = nv
            neg = p[-1]
            u = Signal(signed(10), name=f"u{j}")
            m.d.comb += u.eq(Mux(ok, v, Mux(neg, -512, 511)))
            q = Signal(signed(10), name=f"q{j}")
            m.d.comb += q.eq((u + 1) >> 1)
            top = q[7:]
            ovf = ~((top == 0) | (top == (1 << len(top)) - 1))
            m.d.comb += qs.eq(Mux(ovf, Mux(q[-1], -128, 127), q[:8]))
            y = Mux(qs < lo2, lo2, Mux(qs > hi2, hi2, qs))
            with m.If(v2):
                m.d.sync += self.o_data[8 * j:8 * j + 8].eq(y)
        return m

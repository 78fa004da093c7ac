"""Bias, requantization and clamp of V lanes per cycle: the one rule of docs/isa.md."""
from amaranth.hdl import Cat, Module, Signal, Mux, Const, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig

from .bus import stable_copy, timing_regs

__all__ = ["Postproc", "PostprocSignature", "LATENCY"]

#: cycles from an input beat to its output beat
LATENCY = 7


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
        N = LATENCY - 1
        # stage 0: the beat registered as it arrives (its producers' block RAM outputs and muxes
        # end here); then stage k's registers load with v[k-1]
        i = PostprocSignature(lanes=V).flip().create(path=("in",))
        m.d.sync += [i.valid.eq(self.i.valid), i.tag.eq(self.i.tag)]
        with m.If(self.i.valid):
            m.d.sync += [i.acc.eq(self.i.acc), i.bias.eq(self.i.bias), i.mult.eq(self.i.mult),
                         i.shift.eq(self.i.shift)]
            if not self.stable_bounds:
                m.d.sync += [i.lo.eq(self.i.lo), i.hi.eq(self.i.hi)]
        # per-stage valid, tag and (unless stable) clamp bounds
        v = [i.valid] + [Signal(name=f"v{k}") for k in range(1, N)] + [self.o_valid]
        tag = [i.tag] + [Signal(16, name=f"tag{k}") for k in range(1, N)] + [self.o_tag]
        for k in range(1, N + 1):
            m.d.sync += [v[k].eq(v[k - 1]), tag[k].eq(tag[k - 1])]
        if self.stable_bounds:     # (registered: they are stable while any beat is in flight)
            regs = timing_regs(platform)
            lo, hi = stable_copy(m, self.i.lo, regs, "lo_r"), stable_copy(m, self.i.hi, regs, "hi_r")
        else:
            los = [i.lo] + [Signal(signed(8), name=f"lo{k}") for k in range(1, N)]
            his = [i.hi] + [Signal(signed(8), name=f"hi{k}") for k in range(1, N)]
            for k in range(1, N):
                with m.If(v[k - 1]):
                    m.d.sync += [los[k].eq(los[k - 1]), his[k].eq(his[k - 1])]
            lo, hi = los[N - 1], his[N - 1]
        m.d.comb += self.busy.eq(Cat(*v).any())
        for j in range(V):
            acc = i.acc[32 * j:32 * j + 32].as_signed()
            bias = i.bias[32 * j:32 * j + 32].as_signed()
            shs = [i.shift[6 * j:6 * j + 6]] + [Signal(6, name=f"sh{k}_{j}") for k in range(1, N)]
            for k in range(1, N):
                with m.If(v[k - 1]):
                    m.d.sync += shs[k].eq(shs[k - 1])
            # the datapath registers only load with a beat (o_data matters only with o_valid;
            # also less work per cycle in simulation)
            # 1: x = acc + bias (wraps to int32)
            x = Signal(signed(32), name=f"x{j}")
            mult1 = Signal(16, name=f"mult{j}")
            with m.If(v[0]):
                m.d.sync += [x.eq(acc + bias), mult1.eq(i.mult[16 * j:16 * j + 16])]
            # 2: two 16 x 16 partial products (one multiplier each): x = xh * 2**16 + xl
            pl = Signal(32, name=f"pl{j}")
            ph = Signal(signed(33), name=f"ph{j}")
            with m.If(v[1]):
                m.d.sync += [pl.eq(x[:16] * mult1), ph.eq(x[16:].as_signed() * mult1)]
            # 3: p = x * mult, exact
            p = Signal(signed(48), name=f"p{j}")
            with m.If(v[2]):
                m.d.sync += p.eq((ph << 16) + pl)
            # round half up folded into the shift: with t = (2p) >> sh (flooring),
            # q = (p + (1 << (sh-1))) >> sh = (t + 1) >> 1 for every sh in 0..63 (sh = 0: t = 2p).
            # Only sat_10(t) matters (|t| >= 512 saturates q to int8 the same way), so the shifter
            # narrows stage by stage (largest shift first): after the stage of 2**k only
            # 10 + 2**k - 1 bits are kept, and a value that no longer fits that width saturates.
            # 4: shifts by 32, 16, 8; 5: by 4, 2, 1 (``ok``: no bit lost so far, ``neg``: p < 0)
            t = p << 1
            sh = shs[3]
            ok = Const(1, 1)
            for k in (5, 4, 3, 2, 1, 0):
                if k == 2:          # register between the two halves of the shifter
                    tr = Signal(signed(len(t)), name=f"tr{j}")
                    okr, negr = Signal(name=f"ok4_{j}"), Signal(name=f"neg4_{j}")
                    with m.If(v[3]):
                        m.d.sync += [tr.eq(t), okr.eq(ok), negr.eq(p[-1])]
                    t, ok, sh = tr, okr, shs[4]
                wk = 10 + (1 << k) - 1
                sv = Mux(sh[k], t >> (1 << k), t)
                nv = Signal(signed(wk), name=f"t{6 - k}_{j}")
                m.d.comb += nv.eq(sv)
                hi_bits = sv[wk - 1:len(t)]
                ok = ok & ((hi_bits == 0) | (hi_bits == (1 << len(hi_bits)) - 1))
                t = nv
            # 6: q = round(sat_10(t) / 2)
            q = Signal(signed(10), name=f"q{j}")
            with m.If(v[4]):
                m.d.sync += q.eq((Mux(ok, t, Mux(negr, -512, 511)) + 1) >> 1)
            # 7: saturate to int8, clamp
            top = q[7:]
            ovf = ~((top == 0) | (top == (1 << len(top)) - 1))
            qs = Signal(signed(8), name=f"qs{j}")
            m.d.comb += qs.eq(Mux(ovf, Mux(q[-1], -128, 127), q[:8]))
            y = Mux(qs < lo, lo, Mux(qs > hi, hi, qs))
            with m.If(v[5]):
                m.d.sync += self.o_data[8 * j:8 * j + 8].eq(y)
        return m

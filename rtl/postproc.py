"""Bias, requantization and clamp of V lanes per cycle: the one rule of docs/isa.md."""
from amaranth.hdl import Cat, Module, Signal, Mux, Const, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig

from .bus import driving_register, fanout_copies, timing_regs
from .dsp import ecp5_dsp_regs, registered_product

__all__ = ["Postproc", "PostprocSignature", "latency"]


def latency(cfg: AccelConfig) -> int:
    """Cycles from an input beat to its output beat."""
    return 9 if cfg.deep_pipeline else 4


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
    shift >= 1).  Fully pipelined, ``latency(cfg)`` cycles (9 with ``deep_pipeline``, else 4),
    never stalls; ``busy`` while any beat is in flight.  ``stable_bounds``: ``lo``/``hi`` do not change while a beat is in flight (SushiAccel:
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
        deep = self.cfg.deep_pipeline
        N = latency(self.cfg)

        def at(k_deep, k_shallow):      # the stage (1..N) a register belongs to
            return k_deep if deep else k_shallow

        # stage k's registers load with v[k-1]; v[0] is the input beat, v[N] the output
        # (with the timing registers the tags and the output word have no reset: only the valid
        # bits mark what they hold)
        rl = timing_regs(platform)
        v = [self.i.valid] + [Signal(name=f"v{k}") for k in range(1, N)] + [self.o_valid]
        tag = [self.i.tag] + [Signal(16, name=f"tag{k}", reset_less=rl) for k in range(1, N)] + [self.o_tag]
        for k in range(1, N + 1):
            m.d.sync += [v[k].eq(v[k - 1]), tag[k].eq(tag[k - 1])]
        m.d.comb += self.busy.eq(Cat(*v[1:]).any())
        if self.stable_bounds:     # (registered: they are stable while any beat is in flight)
            regs = timing_regs(platform)
            if regs:    # a copy per lane (each drives its lane's two compares and clamp mux)
                lane_lo = fanout_copies(m, self.i.lo, V, "lo_r", reset_less=True)
                lane_hi = fanout_copies(m, self.i.hi, V, "hi_r", reset_less=True)
            else:
                lane_lo, lane_hi = [self.i.lo] * V, [self.i.hi] * V
        else:
            los = [self.i.lo] + [Signal(signed(8), name=f"lo{k}") for k in range(1, N)]
            his = [self.i.hi] + [Signal(signed(8), name=f"hi{k}") for k in range(1, N)]
            for k in range(1, N):
                with m.If(v[k - 1]):
                    m.d.sync += [los[k].eq(los[k - 1]), his[k].eq(his[k - 1])]
            lane_lo, lane_hi = [los[N - 1]] * V, [his[N - 1]] * V

        def load(k, stmt):
            """Stage k's datapath register loads.  The pipeline never stalls, so a beat's values
            move on every cycle: the deep form loads every cycle, without a reset (no enable or
            reset net fanning out to every register of a stage: ~8 ns of ECP5-85F routing); the small
            forms load only with a beat (a flip-flop with an enable is free in an iCE40 LC,
            and there is less simulation work)."""
            if deep:
                m.d.sync += stmt
            else:
                with m.If(v[k - 1]):
                    m.d.sync += stmt

        def reg(k, value, shape, name):
            r = Signal(shape, name=name, reset_less=deep)
            load(k, r.eq(value))
            return r

        o_data = driving_register(m, self.o_data, "o_data") if rl else self.o_data
        for j in range(V):
            lo, hi = lane_lo[j], lane_hi[j]
            acc = self.i.acc[32 * j:32 * j + 32].as_signed()
            bias = self.i.bias[32 * j:32 * j + 32].as_signed()
            mult = self.i.mult[16 * j:16 * j + 16]
            shs = [self.i.shift[6 * j:6 * j + 6]] + [Signal(6, name=f"sh{k}_{j}", reset_less=deep)
                                                     for k in range(1, N)]
            for k in range(1, N):
                load(k, shs[k].eq(shs[k - 1]))
            if deep:    # the beat registered as it arrives (producers' block RAM outputs, muxes)
                acc, bias = reg(1, acc, signed(32), f"acc_r{j}"), reg(1, bias, signed(32), f"bias_r{j}")
                mult = reg(1, mult, 16, f"mult_r{j}")
            # x = acc + bias (wraps to int32)
            k = at(2, 1)
            # p = x * mult, exact (deep: two 16 x 16 partial products, one multiplier each, summed
            # in the next stage: x = xh * 2**16 + xl)
            in_dsp = deep and ecp5_dsp_regs(platform)
            if not in_dsp:
                x = reg(k, acc + bias, signed(32), f"x{j}")
                mult1 = reg(k, mult, 16, f"mult{j}")
            if in_dsp:
                # x and mult are the DSPs' input registers, the partial products their output
                # registers
                xs = (acc + bias)[:32]
                pl = registered_product(m, f"mpl{j}", xs[:16], mult, 32, signed_a=False,
                                        signed_b=False)
                ph = registered_product(m, f"mph{j}", xs[16:], mult, 33, signed_a=True,
                                        signed_b=False).as_signed()
            elif deep:
                pl = reg(3, x[:16] * mult1, 32, f"pl{j}")
                ph = reg(3, x[16:].as_signed() * mult1, signed(33), f"ph{j}")
            else:
                p = reg(2, x * mult1, signed(48), f"p{j}")
            if deep:
                p = reg(4, (ph << 16) + pl, signed(48), f"p{j}")
            # round half up folded into the shift: with t = (2p) >> sh (flooring),
            # q = (p + (1 << (sh-1))) >> sh = (t + 1) >> 1 for every sh in 0..63 (sh = 0: t = 2p).
            # Only sat_10(t) matters (|t| >= 512 saturates q to int8 the same way), so the shifter
            # narrows stage by stage (largest shift first): after the stage of 2**k only
            # 10 + 2**k - 1 bits are kept, and a value that no longer fits that width saturates.
            # Deep: the shifts by 32, 16 in one stage, by 8, 4 in the next, by 2, 1 in a third.
            t = p << 1
            sh = shs[at(4, 2)]
            ok, neg = Const(1, 1), p[-1]
            for b in (5, 4, 3, 2, 1, 0):
                if b in (3, 1) and deep:
                    k = 5 if b == 3 else 6
                    t, ok, neg = (reg(k, t, signed(len(t)), f"tr{k}_{j}"), reg(k, ok, 1, f"ok{k}_{j}"),
                                  reg(k, neg, 1, f"neg{k}_{j}"))
                    sh = shs[k]
                wk = 10 + (1 << b) - 1
                sv = Mux(sh[b], t >> (1 << b), t)
                nv = Signal(signed(wk), name=f"t{6 - b}_{j}")
                m.d.comb += nv.eq(sv)
                hi_bits = sv[wk - 1:len(t)]
                ok = ok & ((hi_bits == 0) | (hi_bits == (1 << len(hi_bits)) - 1))
                t = nv
            # q = round(sat_10(t) / 2), then saturated to int8 and clamped
            # the shifter's output registered before the rounding adder
            k = at(7, 3)
            t, ok, neg = (reg(k, t, signed(len(t)), f"ts{j}"), reg(k, ok, 1, f"ok_{j}"),
                          reg(k, neg, 1, f"neg_{j}"))
            qv = (Mux(ok, t, Mux(neg, -512, 511)) + 1) >> 1
            q = reg(8, qv, signed(10), f"q{j}") if deep else Signal(signed(10), name=f"q{j}")
            if not deep:
                m.d.comb += q.eq(qv)
            top = q[7:]
            ovf = ~((top == 0) | (top == (1 << len(top)) - 1))
            if rl:
                # clamp(sat_int8(q), lo, hi) == clamp(q, lo, hi) for int8 lo and hi (either order):
                # the clamp alone, two compares of q side by side (no saturation before them)
                y = Mux(q < lo, lo, Mux(q > hi, hi, q[:8]))
            else:
                qs = Signal(signed(8), name=f"qs{j}")
                m.d.comb += qs.eq(Mux(ovf, Mux(q[-1], -128, 127), q[:8]))
                y = Mux(qs < lo, lo, Mux(qs > hi, hi, qs))
            with m.If(v[N - 1]):
                m.d.sync += o_data[8 * j:8 * j + 8].eq(y)
        return m

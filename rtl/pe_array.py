"""The R x V int8 multiply-accumulate array with int32 accumulators and a drain register bank."""
from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig

from .bus import fanout_copies, platform_is, timing_regs
from .dsp import ecp5_dsp_regs, registered_product

__all__ = ["PeArray", "ICE40_DUAL_MAC", "latency"]

#: on iCE40 (or when True): two products per SB_MAC16 in its two-8x8-multiplier mode (half the
#: DSPs: yosys maps every product to its own SB_MAC16); None = iCE40 platforms only
ICE40_DUAL_MAC = None


def _dual_mac(platform) -> bool:
    return platform_is(platform, "LatticeICE40Platform", ICE40_DUAL_MAC)


def _sb_mac16_dual8x8(m, name, a, b, ce, o):
    """``o`` (32 bits) = {a[15:8]*b[15:8], a[7:0]*b[7:0]} (signed 8x8 products, 16 bits each),
    registered inside the DSP while ``ce``."""
    m.submodules[name] = Instance(
        "SB_MAC16",
        p_NEG_TRIGGER=Const(0, 1), p_C_REG=Const(0, 1), p_A_REG=Const(0, 1), p_B_REG=Const(0, 1),
        p_D_REG=Const(0, 1), p_TOP_8x8_MULT_REG=Const(1, 1), p_BOT_8x8_MULT_REG=Const(1, 1),
        p_PIPELINE_16x16_MULT_REG1=Const(0, 1), p_PIPELINE_16x16_MULT_REG2=Const(0, 1),
        p_TOPOUTPUT_SELECT=Const(2, 2), p_TOPADDSUB_LOWERINPUT=Const(0, 2),
        p_TOPADDSUB_UPPERINPUT=Const(0, 1), p_TOPADDSUB_CARRYSELECT=Const(0, 2),
        p_BOTOUTPUT_SELECT=Const(2, 2), p_BOTADDSUB_LOWERINPUT=Const(0, 2),
        p_BOTADDSUB_UPPERINPUT=Const(0, 1), p_BOTADDSUB_CARRYSELECT=Const(0, 2),
        p_MODE_8x8=Const(1, 1), p_A_SIGNED=Const(1, 1), p_B_SIGNED=Const(1, 1),
        i_CLK=ClockSignal("sync"), i_CE=ce, i_A=a, i_B=b, i_C=Const(0, 16), i_D=Const(0, 16),
        i_AHOLD=0, i_BHOLD=0, i_CHOLD=0, i_DHOLD=0, i_IRSTTOP=0, i_IRSTBOT=0, i_ORSTTOP=0,
        i_ORSTBOT=0, i_OLOADTOP=0, i_OLOADBOT=0, i_ADDSUBTOP=0, i_ADDSUBBOT=0, i_OHOLDTOP=0,
        i_OHOLDBOT=0, i_CI=0, i_ACCUMCI=0, i_SIGNEXTIN=0, o_O=o)


def latency(cfg: AccelConfig) -> int:
    """Cycles from a step's inputs (cycle 0) to its ``res_valid`` (a pixel's last step)."""
    return 7 if cfg.deep_pipeline else 2


class PeArray(wiring.Component):
    """One reduction step per cycle; ``latency(cfg)`` pipeline stages: with ``deep_pipeline`` the
    memory words registered, the weights (row 0's through the depthwise row select) and the
    activation word's copies registered, the multipliers' operands, the products, the products again, partial sums, accumulate; else
    products, then sum and accumulate.

    Inputs of a step (cycle 0): activation word ``a`` (V int8) with ``inpad`` (0: the word reads as
    zeros, padding), tile ``w`` (R rows of V int8, row r at bits [8V*r, 8V*(r+1))), ``first``
    (reset the accumulators), ``last`` (the pixel is complete), ``dw`` and ``dsel`` (depthwise:
    lane j accumulates ``w[dsel][j] * a[j]``), ``tag``.  ``a`` and ``w`` may come straight from
    block RAM outputs.  Dense: row r accumulates ``sum_j w[r][j] * a[j]``.  ``latency(cfg)``
    cycles after a ``last`` step, ``res`` (R int32, lane r at bits [32r, 32r+32)) holds the pixel's
    sums, ``res_tag`` its tag, and ``res_valid`` pulses for one cycle; ``res`` stays until the next
    ``last`` step lands.  With R == V (one output word per pixel: the CONV engine takes it in the
    ``res_valid`` cycle) ``res`` is the accumulators themselves, valid only while ``res_valid``
    (no second register bank)."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        R, V = cfg.pe_rows, cfg.pe_cols
        super().__init__({
            "en": In(1), "first": In(1), "last": In(1), "dw": In(1), "dsel": In(range(R)),
            "inpad": In(1), "tag": In(16), "a": In(8 * V), "w": In(8 * V * R),
            "res": Out(32 * R), "res_valid": Out(1), "res_tag": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        R, V = self.cfg.pe_rows, self.cfg.pe_cols
        deep = self.cfg.deep_pipeline
        L = latency(self.cfg)
        # control down the pipeline: stage k's copy is ctl[k]
        names = ("en", "first", "last", "dw", "dsel", "inpad", "tag")
        ctl = [{n: getattr(self, n) for n in names}]
        for k in range(1, L):
            # (with the timing registers only ``en`` has a reset: the others matter under it)
            ctl.append({n: Signal.like(getattr(self, n), name=f"{n}{k}",
                                       reset_less=n != "en" and timing_regs(platform)) for n in names})
            m.d.sync += [ctl[k][n].eq(ctl[k - 1][n]) for n in names]

        def rows_of(w):
            return [w[8 * V * r:8 * V * (r + 1)] for r in range(R)]

        def select(m, rows, dsel, dw):      # PE row 0's weights: row dsel when depthwise
            wsel = Signal(len(rows[0]))
            with m.Switch(dsel):
                for r in range(R):
                    with m.Case(r):
                        m.d.comb += wsel.eq(rows[r])
            return Mux(dw, wsel, rows[0])

        dsp = deep and ecp5_dsp_regs(platform)
        if deep:
            # stage 1: the memory words registered (the block RAM outputs drive only these)
            # (the pipeline never stalls and a step's values move on every cycle: the datapath
            # registers load every cycle and have no reset, so no enable or reset net fans out to
            # hundreds of flip-flops; only the accumulators wait for an enabled step)
            nr = dict(reset_less=True)
            a1, w1 = Signal(8 * V, **nr), Signal(8 * V * R, **nr)
            m.d.sync += [a1.eq(Mux(self.inpad, self.a, 0)), w1.eq(self.w)]
            # stage 2: the weights registered, row 0's through the depthwise row select (a wide
            # mux)
            c1 = ctl[1]
            w02 = Signal(8 * V, **nr)
            w2 = [w02] + [Signal(8 * V, name=f"w2_{r}", **nr) for r in range(1, R)]
            if timing_regs(platform):
                # each byte lane's select from its own copy of (dsel1, dw1): one copy was a route
                # to 8 * V wide muxes
                sels = fanout_copies(m, Cat(self.dsel, self.dw), V, "dsel1", reset_less=True)
                for j in range(V):
                    m.d.sync += w02[8 * j:8 * j + 8].eq(
                        select(m, [row[8 * j:8 * j + 8] for row in rows_of(w1)], sels[j][:-1], sels[j][-1]))
            else:
                m.d.sync += w02.eq(select(m, rows_of(w1), c1["dsel"], c1["dw"]))
            m.d.sync += [w2[r].eq(rows_of(w1)[r]) for r in range(1, R)]
            # the activation word, one copy per row with the timing registers (each row's
            # multipliers sit elsewhere on the die: one register feeding all R of them was the
            # longest route into the DSPs)
            if timing_regs(platform):
                a2 = fanout_copies(m, a1, R, "a2", reset_less=True)
            else:
                a2 = [Signal(8 * V, name="a2", **nr)] * R
                m.d.sync += a2[0].eq(a1)
            # stage 3: the multipliers' operands registered, stage 4: the products registered
            # (the DSPs' own input and output registers on ECP5: the stage-2 registers carry the
            # words from the block RAMs to them, the stage-5 ones the products to the adders)
            if dsp:
                dsp_prod = [[registered_product(m, f"mul{r}_{j}", w2[r][8 * j:8 * j + 8],
                                                a2[r][8 * j:8 * j + 8], 16)
                             for j in range(V)] for r in range(R)]
                wrows = arows = None
            else:
                wrows = [Signal(8 * V, name=f"w3_{r}", **nr) for r in range(R)]
                arows = [Signal(8 * V, name=f"a3_{r}", **nr) for r in range(R)]
                m.d.sync += [wrows[r].eq(w2[r]) for r in range(R)]
                m.d.sync += [arows[r].eq(a2[r]) for r in range(R)]
            cm = ctl[3]
        else:
            rows = rows_of(self.w)
            arows = [Mux(self.inpad, self.a, 0)] * R
            wrows = [select(m, rows, self.dsel, self.dw)] + rows[1:]
            cm = ctl[0]
        # products
        prod = [[Signal(signed(16), name=f"p{r}_{j}", reset_less=deep) for j in range(V)] for r in range(R)]
        dual = _dual_mac(platform)
        for r in range(R):
            if wrows is None:           # in the DSPs (ECP5)
                m.d.comb += [prod[r][j].eq(dsp_prod[r][j]) for j in range(V)]
                continue
            wr, a = wrows[r], arows[r]
            if dual:                    # products j, j+1 in one SB_MAC16 (V is even)
                for j in range(0, V, 2):
                    o = Signal(32, name=f"mac{r}_{j}")
                    _sb_mac16_dual8x8(m, f"mac{r}_{j}", wr[8 * j:8 * j + 16], a[8 * j:8 * j + 16],
                                      cm["en"], o)
                    m.d.comb += [prod[r][j].eq(o[:16]), prod[r][j + 1].eq(o[16:])]
                continue
            for j in range(V):
                pj = prod[r][j].eq(wr[8 * j:8 * j + 8].as_signed() * a[8 * j:8 * j + 8].as_signed())
                if deep:
                    m.d.sync += pj
                else:
                    with m.If(cm["en"]):     # products are only used by an enabled step
                        m.d.sync += pj
        if deep:
            # stage 5: the products registered again (by the adders); stage 6: each row's
            # products in two partial sums, and depthwise lane r's product (row 0's)
            pr = [[Signal(signed(16), name=f"pr{r}_{j}", **nr) for j in range(V)] for r in range(R)]
            m.d.sync += [pr[r][j].eq(prod[r][j]) for r in range(R) for j in range(V)]
            H = (V + 1) // 2
            part = [[Signal(signed(16 + H.bit_length()), name=f"s{r}_{h}", **nr) for h in range(2)]
                    for r in range(R)]
            for r in range(R):
                m.d.sync += [part[r][0].eq(sum(pr[r][j] for j in range(H))),
                             part[r][1].eq(sum(pr[r][j] for j in range(H, V)) if V > H else 0)]
            dwp = [Signal(signed(16), name=f"dwp{r}", **nr) for r in range(min(R, V))]
            m.d.sync += [dwp[r].eq(pr[0][r]) for r in range(len(dwp))]
            dense_of = [part[r][0] + part[r][1] for r in range(R)]
            ca = ctl[L - 1]
        else:
            dense_of = [sum(prod[r][j] for j in range(V)) for r in range(R)]
            dwp = [prod[0][r] for r in range(min(R, V))]
            ca = ctl[L - 1]                             # the stage after the products
        # accumulate
        # (the first step of a pixel overwrites them: no reset with the timing registers)
        acc = [Signal(signed(32), name=f"acc{r}", reset_less=timing_regs(platform)) for r in range(R)]
        m.d.sync += self.res_valid.eq(0)
        with m.If(ca["en"] & ca["last"]):
            m.d.sync += [self.res_valid.eq(1), self.res_tag.eq(ca["tag"])]
        # (deep form with the timing registers: each row's accumulator controls from a copy of
        # their own, one register was a route to 8 * 32 * R adder and enable inputs; no reset on
        # them: each reloads every cycle, and a stray accumulate after a reset is overwritten by
        # the next pixel's first step)
        if deep and timing_regs(platform):
            prev = ctl[L - 2]
            rc = [dict(zip(("en", "first", "dw"), c))
                  for c in fanout_copies(m, Cat(prev["en"], prev["first"], prev["dw"]), R, "acc_ctl",
                                         reset_less=True)]
        else:
            rc = [ca] * R
        for r in range(R):
            cr = rc[r]
            s = Mux(cr["dw"], dwp[r], dense_of[r]) if r < V else Mux(cr["dw"], 0, dense_of[r])
            nxt = Signal(signed(32), name=f"nxt{r}")
            m.d.comb += nxt.eq(Mux(cr["first"], 0, acc[r]) + s)
            with m.If(cr["en"]):
                m.d.sync += acc[r].eq(nxt)
                if R > V:
                    with m.If(ca["last"]):
                        m.d.sync += self.res[32 * r:32 * r + 32].eq(nxt)
            if R == V:          # the accumulators hold the pixel's sums in the res_valid cycle
                m.d.comb += self.res[32 * r:32 * r + 32].eq(acc[r])
        return m

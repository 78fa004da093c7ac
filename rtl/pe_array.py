"""The R x V int8 multiply-accumulate array with int32 accumulators and a drain register bank."""
from amaranth.hdl import Module, Signal, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig

__all__ = ["PeArray"]


class PeArray(wiring.Component):
    """One reduction step per cycle, two pipeline stages (products, then sum + accumulate).

    Inputs of a step (cycle 0): activation word ``a`` (V int8), tile ``w`` (R rows of V int8,
    row r at bits [8V*r, 8V*(r+1))), ``first`` (reset the accumulators), ``last`` (the pixel is
    complete), ``dw`` and ``dsel`` (depthwise: lane j accumulates ``w[dsel][j] * a[j]``), ``tag``.
    Dense: row r accumulates ``sum_j w[r][j] * a[j]``.  Two cycles after a ``last`` step,
    ``res`` (R int32, lane r at bits [32r, 32r+32)) holds the pixel's sums, ``res_tag`` its tag, and
    ``res_valid`` pulses for one cycle; ``res`` stays until the next ``last`` step lands."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        R, V = cfg.pe_rows, cfg.pe_cols
        super().__init__({
            "en": In(1), "first": In(1), "last": In(1), "dw": In(1), "dsel": In(range(R)),
            "tag": In(16), "a": In(8 * V), "w": In(8 * V * R),
            "res": Out(32 * R), "res_valid": Out(1), "res_tag": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        R, V = self.cfg.pe_rows, self.cfg.pe_cols
        row = [self.w[8 * V * r:8 * V * (r + 1)] for r in range(R)]
        wsel = Signal(8 * V)
        with m.Switch(self.dsel):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += wsel.eq(row[r])
        w0 = Mux(self.dw, wsel, row[0])
        # stage 1: products
        en1, first1, last1, dw1 = Signal(), Signal(), Signal(), Signal()
        tag1 = Signal(16)
        m.d.sync += [en1.eq(self.en), first1.eq(self.first), last1.eq(self.last & self.en),
                     dw1.eq(self.dw), tag1.eq(self.tag)]
        prod = [[Signal(signed(16), name=f"p{r}_{j}") for j in range(V)] for r in range(R)]
        for r in range(R):
            wr = w0 if r == 0 else row[r]
            for j in range(V):
                with m.If(self.en):     # products are only used by an enabled step
                    m.d.sync += prod[r][j].eq(wr[8 * j:8 * j + 8].as_signed() * self.a[8 * j:8 * j + 8].as_signed())
        # stage 2: reduce and accumulate
        acc = [Signal(signed(32), name=f"acc{r}") for r in range(R)]
        m.d.sync += self.res_valid.eq(0)
        with m.If(en1 & last1):
            m.d.sync += [self.res_valid.eq(1), self.res_tag.eq(tag1)]
        for r in range(R):
            dense = sum(prod[r][j] for j in range(V))
            s = Mux(dw1, prod[0][r], dense) if r < V else Mux(dw1, 0, dense)
            nxt = Signal(signed(32), name=f"nxt{r}")
            m.d.comb += nxt.eq(Mux(first1, 0, acc[r]) + s)
            with m.If(en1):
                m.d.sync += acc[r].eq(nxt)
                with m.If(last1):
                    m.d.sync += self.res[32 * r:32 * r + 32].eq(nxt)
        return m

"""Address generator of the sliding-window loops shared by CONV and POOL."""
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WindowGen"]


class WindowGen(wiring.Component):
    """Walks ``for oy, ox, cc < n_cc: for ky, kx, c < n_c`` and yields one step per ``advance``.

    A step reads buffer word ``ioff + (iy*in_w + ix)*stride + cc + c`` with ``iy = oy*sh + ky -
    pad_top``, ``ix = ox*sw + kx - pad_left``; ``inpad`` says the position lies inside the input.
    ``first``/``last`` mark the first/last step of a unit (one ``(oy, ox, cc)``); ``obase`` is
    ``obase0 + unit*ostride``.  The configuration must be stable from ``start`` to the end; after
    ``start`` two setup cycles pass before ``valid`` rises."""

    def __init__(self):
        super().__init__({
            "start": In(1),
            "in_h": In(10), "in_w": In(10), "out_h": In(10), "out_w": In(10),
            "kh": In(8), "kw": In(8), "sh": In(3), "sw": In(3), "pad_top": In(4), "pad_left": In(4),
            "n_cc": In(10), "n_c": In(10), "stride": In(10), "ioff": In(17), "obase0": In(17),
            "ostride": In(10),
            "advance": In(1),
            "valid": Out(1), "addr": Out(16), "inpad": Out(1), "first": Out(1), "last": Out(1),
            "final": Out(1), "obase": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        S = signed(32)
        oy, ox, cc, c = Signal(10), Signal(10), Signal(10), Signal(10)
        ky, kx = Signal(8), Signal(8)
        iy0, ix0, iy, ix = (Signal(signed(14), name=n) for n in ("iy0", "ix0", "iy", "ix"))
        prow, pbase, rbase, kbase = (Signal(S, name=n) for n in ("prow", "pbase", "rbase", "kbase"))
        rowstride, colstep, rowstep, padl, padt = (Signal(S, name=n) for n in
                                                   ("rowstride", "colstep", "rowstep", "padl", "padt"))
        obase = Signal(17)
        setup = Signal(2)

        last_c = c == self.n_c - 1
        last_kx = kx == self.kw - 1
        last_ky = ky == self.kh - 1
        last_cc = cc == self.n_cc - 1
        last_ox = ox == self.out_w - 1
        last_oy = oy == self.out_h - 1
        m.d.comb += [
            self.addr.eq(self.ioff + kbase + cc + c),
            self.inpad.eq((iy >= 0) & (iy < self.in_h) & (ix >= 0) & (ix < self.in_w)),
            self.first.eq((c == 0) & (kx == 0) & (ky == 0)),
            self.last.eq(last_c & last_kx & last_ky),
            self.final.eq(last_c & last_kx & last_ky & last_cc & last_ox & last_oy),
            self.obase.eq(obase),
        ]
        with m.If(self.start):
            m.d.sync += [setup.eq(1), self.valid.eq(0),
                         rowstride.eq(self.in_w * self.stride), colstep.eq(self.sw * self.stride),
                         padl.eq(self.pad_left * self.stride)]
        with m.Elif(setup == 1):
            m.d.sync += [setup.eq(2), rowstep.eq(self.sh * rowstride),
                         padt.eq(self.pad_top * rowstride)]
        with m.Elif(setup == 2):
            p0 = -padt - padl
            m.d.sync += [setup.eq(0), self.valid.eq(1),
                         oy.eq(0), ox.eq(0), cc.eq(0), ky.eq(0), kx.eq(0), c.eq(0),
                         iy0.eq(-self.pad_top), iy.eq(-self.pad_top),
                         ix0.eq(-self.pad_left), ix.eq(-self.pad_left),
                         prow.eq(p0), pbase.eq(p0), rbase.eq(p0), kbase.eq(p0),
                         obase.eq(self.obase0)]
        with m.Elif(self.advance & self.valid):
            with m.If(~last_c):
                m.d.sync += c.eq(c + 1)
            with m.Else():
                m.d.sync += c.eq(0)
                with m.If(~last_kx):
                    m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), kbase.eq(kbase + self.stride)]
                with m.Else():
                    m.d.sync += [kx.eq(0), ix.eq(ix0)]
                    with m.If(~last_ky):
                        m.d.sync += [ky.eq(ky + 1), iy.eq(iy + 1), rbase.eq(rbase + rowstride),
                                     kbase.eq(rbase + rowstride)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), obase.eq(obase + self.ostride)]
                        with m.If(~last_cc):
                            m.d.sync += [cc.eq(cc + 1), iy.eq(iy0), rbase.eq(pbase), kbase.eq(pbase)]
                        with m.Else():
                            m.d.sync += cc.eq(0)
                            with m.If(~last_ox):
                                nb = pbase + colstep
                                m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + self.sw), ix.eq(ix0 + self.sw),
                                             iy.eq(iy0), pbase.eq(nb), rbase.eq(nb), kbase.eq(nb)]
                            with m.Else():
                                nb = prow + rowstep
                                m.d.sync += [ox.eq(0), ix0.eq(-self.pad_left), ix.eq(-self.pad_left),
                                             oy.eq(oy + 1), iy0.eq(iy0 + self.sh), iy.eq(iy0 + self.sh),
                                             prow.eq(nb), pbase.eq(nb), rbase.eq(nb), kbase.eq(nb)]
                                with m.If(last_oy):
                                    m.d.sync += self.valid.eq(0)
        return m

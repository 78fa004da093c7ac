"""Address generator of the sliding-window loops shared by CONV and POOL."""
from amaranth.hdl import Module, Signal, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bus import stable_copy, timing_regs

__all__ = ["WindowGen", "WindowSignature", "CFG_PORTS", "OUT_PORTS"]

#: configuration inputs of the window generator (name, width)
CFG_PORTS = (("in_h", 10), ("in_w", 10), ("out_h", 10), ("out_w", 10), ("kh", 8), ("kw", 8),
             ("sh", 3), ("sw", 3), ("pad_top", 4), ("pad_left", 4), ("n_cc", 10), ("n_c", 10),
             ("stride", 10), ("ioff", 17), ("obase0", 17), ("ostride", 10))
#: outputs of the window generator (name, width)
OUT_PORTS = (("valid", 1), ("addr", 16), ("inpad", 1), ("first", 1), ("last", 1), ("final", 1),
             ("obase", 16))


class WindowSignature(wiring.Signature):
    """The window generator seen from a user (CONV engine, vector unit): configuration, ``start``
    and ``advance`` out, the step back.  One WindowGen in SushiAccel serves both users (they never
    run at the same time)."""

    def __init__(self):
        members = {"start": Out(1), "advance": Out(1)}
        members.update({n: Out(w) for n, w in CFG_PORTS})
        members.update({n: In(w) for n, w in OUT_PORTS})
        super().__init__(members)

    def __eq__(self, other):
        return type(other) is WindowSignature

    def __repr__(self):
        return "WindowSignature()"


#: every setup product by shift-and-add (LUTs) instead of multipliers (DSPs); products with a
#: factor of at most NARROW_BITS bits (sh, sw, pad_top, pad_left) always are
SHIFT_ADD = False
NARROW_BITS = 4


def _mul16(a, b, w=16):
    """(a * b) mod 2**w; shift-and-add when SHIFT_ADD or ``b`` (unsigned) is narrow."""
    if not SHIFT_ADD and len(b) > NARROW_BITS:
        return (a * b)[:w]
    terms = [Mux(b[i], (a << i)[:w], 0) for i in range(len(b))]
    acc = terms[0]
    for t in terms[1:]:
        acc = (acc + t)[:w]
    return acc


class WindowGen(wiring.Component):
    """Walks ``for oy, ox, cc < n_cc: for ky, kx, c < n_c`` and yields one step per ``advance``.

    A step reads buffer word ``ioff + (iy*in_w + ix)*stride + cc + c`` with ``iy = oy*sh + ky -
    pad_top``, ``ix = ox*sw + kx - pad_left``; ``inpad`` says the position lies inside the input.
    ``first``/``last`` mark the first/last step of a unit (one ``(oy, ox, cc)``); ``obase`` is
    ``obase0 + unit*ostride``.  The configuration must be stable from the cycle before ``start`` to
    the end (it is registered; ``ioff`` and ``obase0`` may change up to ``start`` itself: they are
    first used two cycles later); after ``start`` two setup cycles pass before ``valid`` rises.
    ``start`` must come only while the generator is idle (``valid`` low, no setup cycle running).

    Buffer addresses are 16-bit words, so every address term is kept modulo 2**16 (only ``iy``,
    ``ix`` are exact signed values, for ``inpad``); the setup products are shift-and-add.
    ``addr_bits`` < 16: every address term (``addr``, ``obase``) modulo 2**addr_bits instead (the
    high bits read 0): exact for an activation buffer of at most 2**addr_bits words, whose port
    takes its addresses modulo that anyway."""

    def __init__(self, addr_bits: int = 16):
        if not isinstance(addr_bits, int) or not 1 <= addr_bits <= 16:
            raise ValueError(f"'addr_bits' must be an integer in 1..16, not {addr_bits!r}")
        self.addr_bits = addr_bits
        super().__init__(WindowSignature().flip())

    def elaborate(self, platform):
        m = Module()
        A = self.addr_bits
        # the configuration (instruction fields behind the users' muxes) registered: it is stable
        # from ``start`` on, and the first use of a registered copy is a cycle later
        regs = timing_regs(platform)
        # (no reset: loaded every cycle, read only while the window runs)
        cfgp = {n: stable_copy(m, getattr(self, n), regs, f"cfg_{n}", reset_less=True) for n, _ in CFG_PORTS}
        (in_h, in_w, out_h, out_w, kh, kw, sh, sw, pad_top, pad_left, n_cc, n_c, stride, ioff,
         obase0, ostride) = (cfgp[n] for n, _ in CFG_PORTS)
        # with the timing registers every register but valid and the setup flags without a reset:
        # each is loaded while idle or in the setup cycles before valid rises (the power-on
        # reset is one flip-flop's net to all the others it reaches)
        rl = regs
        oy, ox, cc, c = (Signal(10, reset_less=rl), Signal(10, reset_less=rl), Signal(10, reset_less=rl),
                         Signal(10, reset_less=rl))
        # (kx named: the closure below hides it from the tracer)
        ky, kx = Signal(8, reset_less=rl), Signal(8, name="kx", reset_less=rl)
        iy0, ix0, iy, ix = (Signal(signed(14), name=n, reset_less=rl) for n in ("iy0", "ix0", "iy", "ix"))
        prow, pbase, rbase, kbase = (Signal(A, name=n, reset_less=rl)
                                     for n in ("prow", "pbase", "rbase", "kbase"))
        # word addresses of the current output row / pixel (prow, pbase) and kernel row / position
        # (rbase, kbase); the first two include ioff and the others also cc, so the step's
        # address is kbase + c, kept in a register beside them
        rowstride, colstep, rowstep, padl, padt = (Signal(A, name=n, reset_less=rl) for n in
                                                   ("rowstride", "colstep", "rowstep", "padl", "padt"))
        obase = Signal(A, reset_less=rl)
        iop = Signal(A, reset_less=rl)      # ioff - padl (setup 1): the first address one subtraction away
        # the setup cycles: with the timing registers two one-hot flags (and the step below in a
        # branch of its own, no setup decode in front of the counters' enables: a step comes only
        # while valid, and valid is low during setup), else a 2-bit counter
        if regs:
            s1, s2 = Signal(name="setup1"), Signal(name="setup2")
            idle = ~s1 & ~s2 & ~self.valid

            def to_setup(n):
                return [s1.eq(n == 1), s2.eq(n == 2)]
        else:
            setup = Signal(2)
            s1, s2, idle = setup == 1, setup == 2, (setup == 0) & ~self.valid

            def to_setup(n):
                return [setup.eq(n)]

        # "x is at its last value" flags kept in registers beside the counters (set from the next
        # value's compare when a counter moves), so the step outputs and every decision below
        # (the users' issue logic, ``advance`` and the counters' enables) start at flip-flops
        pairs = ((c, n_c), (kx, kw), (ky, kh), (cc, n_cc), (ox, out_w), (oy, out_h))
        flags = [Signal(name=f"last_{n}", reset_less=rl) for n in ("c", "kx", "ky", "cc", "ox", "oy")]
        last_c, last_kx, last_ky, last_cc, last_ox, last_oy = flags
        bounds = [(f, x, n) for f, (x, n) in zip(flags, pairs)]

        def reset(flag):        # the counter goes to 0
            n = next(b[2] for b in bounds if b[0] is flag)
            return [flag.eq(n == 1)]

        # n - 2 registered (ready from the cycle after ``start``, first used once ``valid``
        # rises): the step compares are x == n - 2
        nm2 = {}
        for f, (x, n) in zip(flags, pairs):
            nm2[id(f)] = Signal(len(x), name=f"{f.name}_n2", reset_less=rl)
            m.d.sync += nm2[id(f)].eq(n - 2)

        def step(flag):         # the counter goes to x + 1
            _, x, n = next(b for b in bounds if b[0] is flag)
            return [flag.eq(x == nm2[id(flag)])]
        # the step's address is a register too (kbase + c kept beside kbase and c: the activation
        # buffer's address port starts at a flip-flop)
        addr_r = Signal(A, reset_less=rl)

        def kb(v):              # kbase and the address register (where c goes to 0) set to v
            return [kbase.eq(v), addr_r.eq(v)]
        m.d.comb += [
            self.addr.eq(addr_r),
            self.inpad.eq((iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)),
            self.first.eq((c == 0) & (kx == 0) & (ky == 0)),
            self.last.eq(last_c & last_kx & last_ky),
            self.final.eq(last_c & last_kx & last_ky & last_cc & last_ox & last_oy),
            self.obase.eq(obase),
        ]
        # the first setup products follow the configuration while the generator is idle (so the
        # start cycle loads them as before, without ``start`` on the enables of all these flip-flops:
        # it comes combinationally from the sequencer's decode, a long path on small FPGAs)
        with m.If(idle):
            m.d.sync += [rowstride.eq(_mul16(stride, in_w, A)),
                         colstep.eq(_mul16(stride, sw, A)),
                         padl.eq(_mul16(stride, pad_left, A))]

        def setup_steps():
            with m.If(s1):
                m.d.sync += [*to_setup(2), rowstep.eq(_mul16(rowstride, sh, A)),
                             padt.eq(_mul16(rowstride, pad_top, A)), iop.eq(ioff[:A] - padl)]
            with m.Elif(s2):
                p0 = (iop - padt)[:A]
                m.d.sync += [*to_setup(0), self.valid.eq(1),
                             oy.eq(0), ox.eq(0), cc.eq(0), ky.eq(0), kx.eq(0), c.eq(0),
                             iy0.eq(-pad_top), iy.eq(-pad_top),
                             ix0.eq(-pad_left), ix.eq(-pad_left),
                             prow.eq(p0), pbase.eq(p0), rbase.eq(p0), *kb(p0),
                             obase.eq(obase0)] + [st for b in bounds for st in reset(b[0])]
        if not regs:
            setup_steps()
        with (m.If(self.advance & self.valid) if regs else m.Elif(self.advance & self.valid)):
            with m.If(~last_c):
                m.d.sync += [c.eq(c + 1), addr_r.eq(addr_r + 1), *step(last_c)]
            with m.Else():
                m.d.sync += [c.eq(0), *reset(last_c)]
                with m.If(~last_kx):
                    m.d.sync += [kx.eq(kx + 1), ix.eq(ix + 1), *kb(kbase + stride), *step(last_kx)]
                with m.Else():
                    m.d.sync += [kx.eq(0), ix.eq(ix0), *reset(last_kx)]
                    with m.If(~last_ky):
                        m.d.sync += [ky.eq(ky + 1), iy.eq(iy + 1), rbase.eq(rbase + rowstride),
                                     *kb(rbase + rowstride),
                                     *step(last_ky)]
                    with m.Else():
                        m.d.sync += [ky.eq(0), obase.eq(obase + ostride), *reset(last_ky)]
                        nb_cc = pbase + cc + 1
                        with m.If(~last_cc):
                            m.d.sync += [cc.eq(cc + 1), iy.eq(iy0), rbase.eq(nb_cc), *kb(nb_cc),
                                         *step(last_cc)]
                        with m.Else():
                            m.d.sync += [cc.eq(0), *reset(last_cc)]
                            with m.If(~last_ox):
                                nb = pbase + colstep
                                m.d.sync += [ox.eq(ox + 1), ix0.eq(ix0 + sw), ix.eq(ix0 + sw),
                                             iy.eq(iy0), pbase.eq(nb), rbase.eq(nb), *kb(nb),
                                             *step(last_ox)]
                            with m.Else():
                                nb = prow + rowstep
                                m.d.sync += [ox.eq(0), ix0.eq(-pad_left), ix.eq(-pad_left), *reset(last_ox), *step(last_oy),
                                             oy.eq(oy + 1), iy0.eq(iy0 + sh), iy.eq(iy0 + sh),
                                             prow.eq(nb), pbase.eq(nb), rbase.eq(nb), *kb(nb)]
                                with m.If(last_oy):
                                    m.d.sync += self.valid.eq(0)
        if regs:
            setup_steps()
        # ``start`` comes only while the generator is idle (setup 0, not valid), so it needs no
        # place in the chain above and stays off the counters' enables (it is a late signal: the
        # sequencer's decode through a unit's start); written last, it wins for setup and valid
        with m.If(self.start):
            m.d.sync += [*to_setup(1), self.valid.eq(0)]
        return m

"""The CONV engine: step issue, PE array feed, accumulator drain into the post-processor."""
from types import SimpleNamespace

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import Op

from .bus import DUP, INSTR_BITS, instr_fields, stable_copy, timing_regs
from .pe_array import PeArray, latency as pe_latency
from .postproc import PostprocSignature
from .window import WindowSignature

__all__ = ["ConvEngine", "latency"]


def latency(cfg: AccelConfig) -> int:
    """Cycles from a step's issue to the PE array's inputs and through it to ``res_valid``: with
    ``deep_pipeline`` the weight buffer's read address is registered beside its block RAMs
    (weight_fetch), so the tile and the activation word reach the PE array a cycle later."""
    return pe_latency(cfg) + (1 if cfg.deep_pipeline else 0)


class ConvEngine(wiring.Component):
    """Executes one CONV (dense or depthwise) group by group, one reduction step per cycle.

    Per step (cycle 0) it addresses the activation buffer and the weight buffer half of the
    current group; the PE array multiplies (cycle 1) and accumulates (cycle 2) (with
    ``deep_pipeline`` ``latency(cfg)`` cycles to a pixel's sums); a finished pixel's
    R sums go to a drain bank and leave as R/V words (one word per cycle, depthwise one word) to
    the post-processor with their records, while the next pixel accumulates.  A pixel's last step
    is held back only when the previous pixel's drain would still be running.  After a group
    the half is released to the weight fetcher."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        R, V = cfg.pe_rows, cfg.pe_cols
        super().__init__({
            "start": In(1), "instr": In(INSTR_BITS), "done": Out(1),
            "full": In(2), "release": Out(1), "release_half": Out(1),
            "w_raddr": Out(range(2 * cfg.wbuf_tiles)), "w_rdata": In(8 * V * R),
            "p_raddr": Out(range(2 * (R // V))), "p_rdata": In(64 * V),
            "buf_raddr": Out(16), "buf_ren": Out(1), "buf_rdata": In(8 * V),
            "pp": Out(PostprocSignature(lanes=V)),
            "win": Out(WindowSignature()),
            "inc_mac": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, V, WT = cfg.pe_rows, cfg.pe_cols, cfg.wbuf_tiles
        RW = R // V
        f = instr_fields(self.instr, Op.CONV)
        dw = f["dw"]
        win = self.win
        m.submodules.pe = pe = PeArray(cfg)

        g = Signal(10)
        hc = Signal()
        # with the timing registers the weight buffer's read address has its own copy of the
        # buffer half (hc also decides the issue, and hc fanned out to the 16 block RAMs too)
        regs = timing_regs(platform)
        hc_w = Signal(name=f"hc{DUP}w") if regs else hc

        def set_hc(v):
            return [hc.eq(v)] + ([hc_w.eq(v)] if regs else [])

        goff = Signal(min(16, max(1, (cfg.act_buf_words - 1).bit_length())))   # modulo the buffer
        nwords = Signal(range(RW + 1))
        m.d.comb += nwords.eq(Mux(dw, 1, RW))
        m.d.comb += [
            win.in_h.eq(f["in_h"]), win.in_w.eq(f["in_w"]), win.out_h.eq(f["out_h"]),
            win.out_w.eq(f["out_w"]), win.kh.eq(f["kh"]), win.kw.eq(f["kw"]), win.sh.eq(f["sh"]),
            win.sw.eq(f["sw"]), win.pad_top.eq(f["pad_top"]), win.pad_left.eq(f["pad_left"]),
            win.n_cc.eq(1), win.n_c.eq(Mux(dw, 1, f["cin_w"])), win.stride.eq(f["cin_w"]),
            win.ioff.eq(f["in_addr"] + Mux(dw, g, 0)), win.obase0.eq(f["out_addr"] + goff),
            win.ostride.eq(f["cout_w"]),
        ]

        # ---- issue (cycle 0)
        t = Signal(range(WT + 1))
        sub = Signal(range(R))
        gap = Signal(range(RW + 2), init=RW)
        issue = Signal()
        running = Signal()
        # gap >= nwords: a flag kept beside gap (nwords is an instruction field, stable while the
        # engine runs)
        gap_ok = Signal(init=1)
        nw_r = stable_copy(m, nwords, True, "nwords_r")
        if cfg.deep_pipeline:
            # the window's steps pass through a two-entry queue (head ``q0``): the window advances
            # while the queue has room (registered), not on the issue, so the issue decision (the
            # buffer half full, the drain gap) drives this engine's few registers and not the
            # window's ~150 counter enables; a group's first step issues a cycle later
            names = ("addr", "first", "last", "final", "inpad", "obase")
            q0 = {n: Signal.like(getattr(win, n), name=f"q0_{n}", reset_less=True) for n in names}
            q1 = {n: Signal.like(getattr(win, n), name=f"q1_{n}", reset_less=True) for n in names}
            hv, h2 = Signal(), Signal()         # queue holds 1+ / 2 steps
            push = Signal()
            m.d.comb += push.eq(running & win.valid & ~h2)
            m.d.sync += [hv.eq(h2 | push | (hv & ~issue)), h2.eq((h2 | (hv & push)) & ~issue)]
            with m.If(issue & h2):
                m.d.sync += [q0[n].eq(q1[n]) for n in names]
            with m.If(push & (~hv | issue)):
                m.d.sync += [q0[n].eq(getattr(win, n)) for n in names]
            with m.If(push & hv & ~issue):
                m.d.sync += [q1[n].eq(getattr(win, n)) for n in names]
            step = SimpleNamespace(valid=hv, **q0)
        else:
            step, push = win, issue
        m.d.comb += issue.eq(running & step.valid & self.full.bit_select(hc, 1)
                             & (~step.last | gap_ok))
        m.d.comb += [win.advance.eq(push), self.inc_mac.eq(issue),
                     self.buf_raddr.eq(step.addr), self.buf_ren.eq(1),
                     self.w_raddr.eq(Mux(hc_w, WT, 0) + t)]
        with m.If(issue & step.last):
            m.d.sync += [t.eq(0), sub.eq(0), gap.eq(1), gap_ok.eq(nw_r <= 1)]
        with m.Else():
            with m.If(gap < RW):
                m.d.sync += [gap.eq(gap + 1), gap_ok.eq(gap + 1 >= nw_r)]
            with m.If(issue):
                with m.If(~dw):
                    m.d.sync += t.eq(t + 1)
                with m.Elif(sub == R - 1):
                    m.d.sync += [sub.eq(0), t.eq(t + 1)]
                with m.Else():
                    m.d.sync += sub.eq(sub + 1)

        # ---- cycle 1: memory data -> PE array
        # (with the timing registers only en1 has a reset: the others matter under it)
        en1, first1, last1, inpad1 = (Signal(), Signal(reset_less=regs), Signal(reset_less=regs),
                                      Signal(reset_less=regs))
        sub1 = Signal(range(R), reset_less=regs)
        tag1 = Signal(16, reset_less=regs)
        m.d.sync += [en1.eq(issue), first1.eq(step.first), last1.eq(step.last), inpad1.eq(step.inpad),
                     sub1.eq(sub), tag1.eq(step.obase)]
        pe_in = {"en": en1, "first": first1, "last": last1, "dsel": sub1, "tag": tag1,
                 "inpad": inpad1, "a": self.buf_rdata}
        if cfg.deep_pipeline:
            # the tile comes two cycles after the step (its address registered per row beside
            # the weight buffer's block RAMs): the activation word and the step's controls wait
            # a cycle in registers (only ``en`` needs a reset)
            for k, v in list(pe_in.items()):
                pe_in[k] = Signal.like(v, name=f"{k}2", reset_less=k != "en")
                m.d.sync += pe_in[k].eq(v)
        m.d.comb += [pe.en.eq(pe_in["en"]), pe.first.eq(pe_in["first"]), pe.last.eq(pe_in["last"]),
                     pe.dw.eq(dw), pe.dsel.eq(pe_in["dsel"]), pe.tag.eq(pe_in["tag"]),
                     pe.inpad.eq(pe_in["inpad"]), pe.a.eq(pe_in["a"]), pe.w.eq(self.w_rdata)]

        # ---- drain: one output word per cycle
        dq = Signal(range(RW + 1))
        dbusy = Signal()
        dcur = Signal(range(RW + 1))
        dact = Signal()
        m.d.comb += [dcur.eq(Mux(pe.res_valid, 0, dq)), dact.eq(pe.res_valid | dbusy)]
        d1_valid = Signal()
        # one word per pixel (R == V) with the timing registers: the word register loads every
        # cycle (it is read only with d1_valid, the cycle after res_valid), no enable net to its
        # 32V flip-flops
        one_word = RW == 1 and timing_regs(platform)
        d1_acc = Signal(32 * V, reset_less=one_word)
        d1_tag = Signal(16)
        # (one word per pixel: dcur is 0 whenever the drain reads, so the record address is the
        # buffer half alone, not a function of res_valid)
        m.d.comb += self.p_raddr.eq(Mux(hc, RW, 0) if one_word else Mux(hc, RW, 0) + dcur)
        m.d.sync += d1_valid.eq(dact)
        if one_word:
            m.d.sync += d1_acc.eq(pe.res)
        with m.If(dact):
            if not one_word:
                with m.Switch(dcur):
                    for q in range(RW):
                        with m.Case(q):
                            m.d.sync += d1_acc.eq(pe.res[32 * V * q:32 * V * (q + 1)])
            m.d.sync += [d1_tag.eq(pe.res_tag + dcur), dq.eq(dcur + 1), dbusy.eq(dcur + 1 < nwords)]
        m.d.comb += [self.pp.valid.eq(d1_valid), self.pp.acc.eq(d1_acc), self.pp.tag.eq(d1_tag),
                     self.pp.lo.eq(f["clamp_lo"]), self.pp.hi.eq(f["clamp_hi"])]
        for j in range(V):
            rec = self.p_rdata[64 * j:64 * j + 64]
            m.d.comb += [self.pp.bias[32 * j:32 * j + 32].eq(rec[0:32]),
                         self.pp.mult[16 * j:16 * j + 16].eq(rec[32:48]),
                         self.pp.shift[6 * j:6 * j + 6].eq(rec[48:54])]

        # ---- group control
        wait = Signal(range(RW + 4 + latency(cfg)))
        # with the timing registers wait == 0 is a flag set from wait == 1 (the wait is at least
        # 4), and the group end leaves t and sub alone: the final step (a pixel's last) cleared them
        wait_end = Signal() if regs else (wait == 0)
        g_end = Signal()        # g == n_groups, a flag set beside g (the window's start follows it)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [g.eq(0), *set_hc(0), goff.eq(0), t.eq(0), sub.eq(0),
                                 g_end.eq(f["n_groups"] == 0)]
                    m.next = "GSTART"
            with m.State("GSTART"):
                with m.If(g_end):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += win.start.eq(1)
                    if regs:        # (RUN as a flag of its own: it gates the issue and the steps)
                        m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                if not regs:
                    m.d.comb += running.eq(1)
                with m.If(issue & step.final):
                    m.d.sync += wait.eq(RW + 3 + latency(cfg))
                    if regs:
                        m.d.sync += [wait_end.eq(0), running.eq(0)]
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.sync += wait.eq(wait - 1)
                if regs:
                    m.d.sync += wait_end.eq(wait == 1)
                with m.If(wait_end):
                    m.d.comb += [self.release.eq(1), self.release_half.eq(hc)]
                    m.d.sync += [*set_hc(~hc), g.eq(g + 1), g_end.eq(g + 1 == f["n_groups"]),
                                 goff.eq(goff + Mux(dw, 1, RW))]
                    if not regs:
                        m.d.sync += [t.eq(0), sub.eq(0)]
                    m.next = "GSTART"
        return m

"""Instruction fetch from DRAM at PROG_BASE, decode of the opcode, dispatch and STATUS."""
from amaranth.hdl import Module, Signal, Const
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import INSTR_BYTES, Op

from .bus import CmdSignature, DataSignature, INSTR_BITS, driving_register, instr_fields, timing_regs

__all__ = ["Sequencer"]


class Sequencer(wiring.Component):
    """Fetches 32-byte instructions in order, starts the engine of each (``exec_start`` with
    ``exec_op``), waits for ``exec_done``; HALT sets done, an unknown opcode error 1; error 3 for a
    LOADSG with ``pb_slot + n_tiles > pb_tiles``, a SETRES with ``key >= res_entries`` or
    ``pb_slot + rows*c_res > pb_tiles``, a PBKEY ``on`` with ``key >= res_entries`` (errors stop
    the program with nothing executed; the next START runs normally).  PBKEY is executed here:
    ``pb_on``/``pb_key`` (cleared by START) tell the weight fetcher which residency entry the
    following CONVs use.  ``fetching`` is high while it owns the DRAM read port."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        V = cfg.pe_cols
        super().__init__({
            "start": In(1), "prog_base": In(32),
            "busy": Out(1), "done": Out(1), "error": Out(8),
            "rd_cmd": Out(CmdSignature()), "rd_data": In(DataSignature(width=8 * V)),
            "fetching": Out(1),
            "instr": Out(INSTR_BITS), "exec_op": Out(4), "exec_start": Out(1), "exec_done": In(1),
            "inc_instr": Out(1), "inc_instr_rd": Out(1),
            "pb_on": Out(1), "pb_key": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.cfg.pe_cols
        W = 8 * V
        beats = max(1, INSTR_BYTES // V)
        pc = Signal(self.cfg.dram_addr_bits)
        k = Signal(range(beats + 1))
        # the instruction register; with the timing registers without a reset (it is loaded
        # before anything decodes it), as are the DECODE operands below
        rl = timing_regs(platform)
        instr = driving_register(m, self.instr, "instr_r") if rl else self.instr
        op = instr[:8]
        m.d.comb += self.exec_op.eq(op[:4])
        fs = instr_fields(instr, Op.LOADSG)
        fr = instr_fields(instr, Op.SETRES)
        fk = instr_fields(instr, Op.PBKEY)
        cfg = self.cfg
        # the DECODE decisions registered (CHECK), so that exec_start and every unit's start are a
        # few gates from flip-flops; with deep_pipeline in two steps (CHECK: products, sums and
        # simple compares of the fresh instruction; CHECK2: the range checks)
        c_sg, c_sr, c_key, c_on = Signal(), Signal(), Signal(), Signal()
        c_sr_key, c_key_bad, c_sg_sum_bad = Signal(), Signal(), Signal()
        c_slot = Signal(32, reset_less=rl)
        c_res_n = Signal(32, reset_less=rl)
        c_empty = Signal()
        r_bad, r_halt, r_key, r_ok = Signal(), Signal(), Signal(), Signal()
        r_go = Signal()         # DECODE starts a unit (exec_start from one flip-flop and DECODE)
        x_start = Signal()      # (deep_pipeline, timing registers) exec_start
        check1 = [c_sg.eq(op == Op.LOADSG), c_sr.eq(op == Op.SETRES), c_key.eq(op == Op.PBKEY),
                  c_on.eq(fk["on"]), c_key_bad.eq(fk["key"] >= cfg.res_entries),
                  c_sr_key.eq(fr["key"] >= cfg.res_entries), c_slot.eq(fr["pb_slot"])]
        if cfg.pb_tiles:
            check1 += [c_sg_sum_bad.eq((fs["pb_slot"] + fs["n_tiles"]) > cfg.pb_tiles),
                       c_res_n.eq(fr["rows"] * fr["c_res"])]
            # slot + rows*c_res > pb_tiles, on K = bits(pb_tiles) bits: an operand of 2**K or more
            # alone exceeds it
            K = cfg.pb_tiles.bit_length()
            res_bad = (c_sr_key | (c_slot[K:] != 0) | (c_res_n[K:] != 0)
                       | ((c_slot[:K] + c_res_n[:K]) > cfg.pb_tiles))
        else:       # no PB: only an empty entry may be set, LOADSG of nothing
            check1 += [c_sg_sum_bad.eq((fs["pb_slot"] != 0) | (fs["n_tiles"] != 0)),
                       c_empty.eq((fr["rows"] == 0) | (fr["c_res"] == 0))]
            res_bad = c_sr_key | (c_slot != 0) | ~c_empty
        decide = [r_halt.eq(op == Op.HALT), r_key.eq(op == Op.PBKEY),
                  r_ok.eq((op >= Op.LOAD) & (op <= int(max(Op))))]
        pb_bad = (c_sg & c_sg_sum_bad) | (c_sr & res_bad) | (c_key & c_on & c_key_bad)
        deep = cfg.deep_pipeline            # else the checks in one step (CHECK)
        if not deep:
            m.d.comb += check1

        # fetching (FETCH and RECV; the DRAM read port's owner, RECV's rd_data.ready): with the
        # timing registers a flip-flop set on the way into FETCH, cleared with the last beat
        fetch_r = Signal()

        def fetch(into: bool):
            return [fetch_r.eq(into)] if rl else []

        def fetching_here(*more):
            m.d.comb += ([] if rl else [self.fetching.eq(1)]) + list(more)
        if rl:
            m.d.comb += [self.fetching.eq(fetch_r), self.rd_data.ready.eq(fetch_r)]
        if deep and rl:
            m.d.sync += x_start.eq(0)
            m.d.comb += self.exec_start.eq(x_start)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(self.prog_base), self.busy.eq(1), self.done.eq(0),
                                 self.error.eq(0), self.pb_on.eq(0), *fetch(True)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                fetching_here(self.rd_cmd.valid.eq(1), self.rd_cmd.len.eq(beats))
                if V > INSTR_BYTES:
                    m.d.comb += self.rd_cmd.addr.eq(pc & ~Const(V - 1, len(pc)))
                else:
                    m.d.comb += self.rd_cmd.addr.eq(pc)
                with m.If(self.rd_cmd.ready):
                    m.d.sync += k.eq(0)
                    m.next = "RECV"
            with m.State("RECV"):
                fetching_here(*([] if rl else [self.rd_data.ready.eq(1)]))
                with m.If(self.rd_data.valid):
                    if V > INSTR_BYTES:
                        n = V // INSTR_BYTES
                        with m.Switch(pc[5:5 + (n - 1).bit_length()]):
                            for i in range(n):
                                with m.Case(i):
                                    m.d.sync += instr.eq(self.rd_data.data[i * INSTR_BITS:(i + 1) * INSTR_BITS])
                    else:
                        with m.Switch(k):
                            for i in range(beats):
                                with m.Case(i):
                                    m.d.sync += instr[i * W:(i + 1) * W].eq(self.rd_data.data)
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == beats - 1):
                        m.d.sync += fetch(False)
                        m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += decide
                if deep:
                    m.d.sync += check1
                    m.next = "CHECK2"
                else:
                    go = (op >= Op.LOAD) & (op <= int(max(Op))) & (op != Op.HALT) & (op != Op.PBKEY)
                    m.d.sync += [r_bad.eq(pb_bad), r_go.eq(go)]
                    m.next = "DECODE"
            if deep:
                with m.State("CHECK2"):
                    m.d.sync += [r_bad.eq(pb_bad), r_go.eq(r_ok & ~r_halt & ~r_key)]
                    if rl:      # exec_start itself a flip-flop, set for the one DECODE cycle
                        m.d.sync += x_start.eq(r_ok & ~r_halt & ~r_key & ~pb_bad)
                    m.next = "DECODE"
            with m.State("DECODE"):
                m.d.comb += [self.inc_instr_rd.eq(1), self.inc_instr.eq(1)]
                if not (deep and rl):
                    m.d.comb += self.exec_start.eq(r_go & ~r_bad)
                m.d.sync += pc.eq(pc + INSTR_BYTES)
                with m.If(r_halt):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(r_bad):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1), self.error.eq(3)]
                    m.next = "IDLE"
                with m.Elif(r_key):
                    m.d.sync += [self.pb_on.eq(fk["on"]), self.pb_key.eq(fk["key"]), *fetch(True)]
                    m.next = "FETCH"
                with m.Elif(r_ok):
                    m.next = "EXEC"
                with m.Else():
                    m.d.sync += [self.busy.eq(0), self.done.eq(1), self.error.eq(1)]
                    m.next = "IDLE"
            with m.State("EXEC"):
                with m.If(self.exec_done):
                    m.d.sync += fetch(True)
                    m.next = "FETCH"
        return m

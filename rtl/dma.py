"""LOAD/STORE between DRAM and the activation buffer, and the DRAM read-port multiplexer."""
from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import Op

from .bus import CmdSignature, DataSignature, INSTR_BITS, instr_fields, stable_copy, timing_regs

__all__ = ["Dma", "ReadMux", "MAX_BURST"]

#: longest DRAM command the DMA issues, in beats
MAX_BURST = 4096


class Dma(wiring.Component):
    """Executes LOAD and STORE (``start`` with the instruction word; ``done`` pulses at the end).

    The activation buffer is reached through a synchronous read port (``buf_raddr``/``buf_ren``,
    data the next cycle) and a write port (``buf_waddr``/``buf_wdata``/``buf_we``)."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        W = 8 * cfg.pe_cols
        super().__init__({
            "start": In(1), "instr": In(INSTR_BITS), "done": Out(1),
            "rd_cmd": Out(CmdSignature()), "rd_data": In(DataSignature(width=W)),
            "wr_cmd": Out(CmdSignature()), "wr_data": Out(DataSignature(width=W)),
            "buf_raddr": Out(16), "buf_ren": Out(1), "buf_rdata": In(W),
            "buf_waddr": Out(16), "buf_wdata": Out(W), "buf_we": Out(1),
            "inc_act_rd": Out(1), "inc_act_wr": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.cfg.pe_cols
        f = instr_fields(self.instr, Op.LOAD)   # STORE has the same layout
        regs = timing_regs(platform)
        is_load = stable_copy(m, self.instr[:8] == Op.LOAD, regs, "is_load")
        rem = Signal(20)        # words not yet covered by a command
        # next buffer word (LOAD: to write; STORE: to read), modulo the buffer's address space
        baddr = Signal(min(16, max(1, (self.cfg.act_buf_words - 1).bit_length())))
        daddr = Signal(self.cfg.dram_addr_bits)
        chunk = Signal(range(MAX_BURST + 1))
        cnt = Signal(range(MAX_BURST + 1))      # beats left in the current command
        issued = Signal(range(MAX_BURST + 1))   # STORE: words read for the current command
        dv = Signal()                           # STORE: read-port data is a pending beat
        # with the timing registers chunk is a register, updated beside rem
        if regs:
            def set_rem(v):
                return [rem.eq(v), chunk.eq(Mux(v > MAX_BURST, MAX_BURST, v))]
        else:
            m.d.comb += chunk.eq(Mux(rem > MAX_BURST, MAX_BURST, rem))

            def set_rem(v):
                return [rem.eq(v)]

        # rd_data.ready (LOAD): with the timing registers a flip-flop set as the read command is
        # accepted, cleared with its last beat
        rdy = Signal()
        if regs:
            m.d.comb += self.rd_data.ready.eq(rdy)
            # the activation buffer's read port outside the state decode (reads have no side
            # effect; dv is only ever set in STORE): no state logic before the block RAMs' ports
            m.d.comb += [self.buf_raddr.eq(baddr), self.buf_ren.eq(~dv | self.wr_data.ready)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [*set_rem(f["n_words"]), baddr.eq(f["buf_addr"]),
                                 daddr.eq(f["dram_addr"])]
                    m.next = "CMD"
            with m.State("CMD"):
                with m.If(chunk == 0):       # rem == 0
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(is_load):
                    m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.addr.eq(daddr),
                                 self.rd_cmd.len.eq(chunk)]
                    with m.If(self.rd_cmd.ready):
                        m.d.sync += [cnt.eq(chunk), *set_rem(rem - chunk), daddr.eq(daddr + chunk * V),
                                     *([rdy.eq(1)] if regs else [])]
                        m.next = "LOAD"
                with m.Else():
                    m.d.comb += [self.wr_cmd.valid.eq(1), self.wr_cmd.addr.eq(daddr),
                                 self.wr_cmd.len.eq(chunk)]
                    with m.If(self.wr_cmd.ready):
                        m.d.sync += [cnt.eq(chunk), *set_rem(rem - chunk), daddr.eq(daddr + chunk * V),
                                     issued.eq(0), dv.eq(0)]
                        m.next = "STORE"
            with m.State("LOAD"):
                m.d.comb += [*([] if regs else [self.rd_data.ready.eq(1)]), self.buf_waddr.eq(baddr),
                             self.buf_wdata.eq(self.rd_data.data)]
                with m.If(self.rd_data.valid):
                    m.d.comb += [self.buf_we.eq(1), self.inc_act_rd.eq(1)]
                    m.d.sync += [baddr.eq(baddr + 1), cnt.eq(cnt - 1)]
                    with m.If(cnt == 1):
                        m.d.sync += [rdy.eq(0)] if regs else []
                        m.next = "CMD"
            with m.State("STORE"):
                adv = ~dv | self.wr_data.ready
                m.d.comb += [self.wr_data.valid.eq(dv), self.wr_data.data.eq(self.buf_rdata)]
                if not regs:
                    m.d.comb += [self.buf_ren.eq(adv), self.buf_raddr.eq(baddr)]
                with m.If(adv):
                    with m.If(issued != cnt):
                        m.d.sync += [dv.eq(1), issued.eq(issued + 1), baddr.eq(baddr + 1)]
                    with m.Else():
                        m.d.sync += dv.eq(0)
                with m.If(dv & self.wr_data.ready):
                    m.d.comb += self.inc_act_wr.eq(1)
                with m.If(dv & self.wr_data.ready & (issued == cnt)):
                    m.d.sync += dv.eq(0)
                    m.next = "CMD"
        return m


class ReadMux(wiring.Component):
    """Connects one of ``n`` DRAM read initiators (chosen by ``sel``) to the DRAM read port.

    Only one command is outstanding at a time and the owner changes only between commands, so
    a plain multiplexer is a complete arbiter here.  With the timing registers the data beats'
    ``valid`` goes to every initiator ungated: only the one with the outstanding command is in a
    state that takes a beat (no path from ``sel`` through the beats' counters and enables)."""

    def __init__(self, cfg: AccelConfig, n: int):
        if not isinstance(n, int) or n <= 0:
            raise TypeError(f"'n' must be a positive integer, not {n!r}")
        self.n = n
        W = 8 * cfg.pe_cols
        ports = {"sel": In(range(n)), "rd_cmd": Out(CmdSignature()),
                 "rd_data": In(DataSignature(width=W))}
        for i in range(n):
            ports[f"cmd{i}"] = In(CmdSignature())
            ports[f"data{i}"] = Out(DataSignature(width=W))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        broadcast = timing_regs(platform)
        for i in range(self.n):
            cmd, data = getattr(self, f"cmd{i}"), getattr(self, f"data{i}")
            m.d.comb += [data.data.eq(self.rd_data.data)]
            if broadcast:
                m.d.comb += data.valid.eq(self.rd_data.valid)
            with m.If(self.sel == i):
                m.d.comb += [self.rd_cmd.valid.eq(cmd.valid), self.rd_cmd.addr.eq(cmd.addr),
                             self.rd_cmd.len.eq(cmd.len), cmd.ready.eq(self.rd_cmd.ready),
                             *([] if broadcast else [data.valid.eq(self.rd_data.valid)]),
                             self.rd_data.ready.eq(data.ready)]
        return m

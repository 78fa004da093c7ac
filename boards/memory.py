"""Memory standing in for DRAM on the boards: a single-port RAM and the accelerator-port bridge."""
from __future__ import annotations

import operator
from functools import reduce

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bus import DUP, CmdSignature, DataSignature, timing_regs
from sim.dram_model import MEM_MODULE

from .link import MemPortSignature

__all__ = ["GenericRam", "SpramRam", "DramBridge", "SPRAM_WORDS"]

#: one iCE40UP5K SB_SPRAM256KA: 16384 x 16 bits
SPRAM_WORDS = 16384


class GenericRam(wiring.Component):
    """``words`` x ``8*width_bytes`` bits: the Verilog black box ``sushi_dram_mem`` of
    :func:`sim.dram_model.mem_verilog` (add that file next to the design).  Yosys infers block RAM
    from it (ECP5); an Amaranth ``Memory`` this deep takes minutes to convert.

    ``banks`` > 1: that many ``sushi_dram_mem`` of ``words/banks`` words, each with its own
    registered copy of the port's inputs (a copy sits by its bank's block RAMs; one register
    driving all 64 block RAMs of 128 KiB across the die was a 15 ns route), and an output
    register of its own that holds the bank's word of a read the cycle it arrives (zero
    otherwise), so ``rdata`` is the OR of those registers (a multiplexer of eight block RAM
    outputs across the die was a 14 ns path): read latency 3 (input registers, block RAM,
    output registers) instead of 1; ``rdata`` holds a read's word for that one cycle only."""

    def __init__(self, *, width_bytes: int, words: int, banks: int = 1):
        if banks < 1 or banks & (banks - 1) or words % banks:
            raise ValueError(f"'banks' must be a power of two dividing {words}, not {banks!r}")
        self.width_bytes, self.words, self.banks = width_bytes, words, banks
        self.read_latency = 1 if banks == 1 else 3
        super().__init__({"port": In(MemPortSignature(addr_bits=max(1, (words - 1).bit_length()),
                                                      data_bits=8 * width_bytes))})

    def elaborate(self, platform):
        m = Module()
        p = self.port
        W = 8 * self.width_bytes
        if self.banks == 1:
            m.submodules.mem = Instance(
                MEM_MODULE, p_W=W, p_AW=len(p.addr), i_clk=ClockSignal("sync"),
                i_raddr=p.addr, i_ren=p.en & ~p.we, o_rdata=p.rdata,
                i_waddr=p.addr, i_we=p.en & p.we, i_wdata=p.wdata)
            return m
        lb = (self.words // self.banks - 1).bit_length()        # address bits inside a bank
        bank = p.addr[lb:]
        outs = []
        for k in range(self.banks):
            # the copies are named *_dup* (rtl.bus.DUP): board builds keep them apart
            a = Signal(lb, name=f"bank{k}{DUP}_addr", reset_less=True)
            d = Signal(W, name=f"bank{k}{DUP}_wdata", reset_less=True)
            we = Signal(name=f"bank{k}_we")
            hit = p.en & (bank == k)
            m.d.sync += [a.eq(p.addr[:lb]), d.eq(p.wdata), we.eq(hit & p.we)]
            o = Signal(W, name=f"bank{k}_rdata")
            # (the bank reads every cycle: its output register takes only the words of its own
            # reads, so a read enable would add nothing but the logic yosys builds to hold the
            # block RAM's output while it is low, a flip-flop driving a 2:1 mux per bit)
            m.submodules[f"mem{k}"] = Instance(
                MEM_MODULE, p_W=W, p_AW=lb, i_clk=ClockSignal("sync"),
                i_raddr=a, i_ren=1, o_rdata=o, i_waddr=a, i_we=we, i_wdata=d)
            outs.append(o)
        # the bank of the read in flight: registered with the inputs, then per bank with the
        # block RAM (whether the word arriving is its own: its output register loads it, else 0)
        sel1, rd1 = Signal.like(bank), Signal()
        m.d.sync += [sel1.eq(bank), rd1.eq(p.en & ~p.we)]
        outs_r = []
        for k in range(self.banks):
            # (whether the word is the bank's own: one copy per half of the word, each drives
            # W/2 output-register inputs)
            own2 = [Signal(name=f"bank{k}_own2{DUP}{h}") for h in range(2)]
            r = Signal(W, name=f"bank{k}_rdata_r", reset_less=True)
            H = W // 2
            m.d.sync += [o.eq(rd1 & (sel1 == k)) for o in own2]
            m.d.sync += [r[:H].eq(Mux(own2[0], outs[k][:H], 0)), r[H:].eq(Mux(own2[1], outs[k][H:], 0))]
            outs_r.append(r)
        m.d.comb += p.rdata.eq(reduce(operator.or_, outs_r))
        return m


class SpramRam(wiring.Component):
    """The four iCE40UP5K SPRAMs (128 KiB) as one ``8*width_bytes``-bit single-port memory:
    ``width_bytes/2`` SPRAMs side by side per bank, ``8/width_bytes`` banks."""

    #: cycles from a read to ``port.rdata``
    read_latency = 1

    def __init__(self, *, width_bytes: int):
        if width_bytes not in (2, 4, 8):
            raise ValueError(f"SPRAM memory supports 'width_bytes' 2, 4 or 8, not {width_bytes!r}")
        self.width_bytes = width_bytes
        self.per_bank = width_bytes // 2
        self.banks = 4 // self.per_bank
        self.words = self.banks * SPRAM_WORDS
        super().__init__({"port": In(MemPortSignature(addr_bits=(self.words - 1).bit_length(),
                                                      data_bits=8 * width_bytes))})

    def elaborate(self, platform):
        m = Module()
        p = self.port
        bank = p.addr[14:]
        rbank = Signal(max(1, len(bank)))
        with m.If(p.en & ~p.we):
            m.d.sync += rbank.eq(bank)
        outs = []
        for b in range(self.banks):
            sel = (bank == b) if self.banks > 1 else 1
            dout = Signal(16 * self.per_bank, name=f"bank{b}")
            outs.append(dout)
            for k in range(self.per_bank):
                m.submodules[f"spram{b}_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=p.addr[:14], i_DATAIN=p.wdata[16 * k:16 * k + 16],
                    i_MASKWREN=0b1111, i_WREN=p.en & p.we & sel, i_CHIPSELECT=1,
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                    o_DATAOUT=dout[16 * k:16 * k + 16])
        if self.banks == 1:
            m.d.comb += p.rdata.eq(outs[0])
        else:
            with m.Switch(rbank):
                for b in range(self.banks):
                    with m.Case(b):
                        m.d.comb += p.rdata.eq(outs[b])
        return m


class DramBridge(wiring.Component):
    """The accelerator's DRAM port (docs/isa.md) on a single-port memory: one access per cycle,
    write beats first; read beats queue in a small FIFO (rd_data back-pressure).  Byte addresses
    are taken modulo the memory size.  ``read_latency``: cycles from a read to ``mem.rdata``
    (SushiSoC: its memory's plus its output register, 2 or 4).

    Timing: the memory port is driven from flip-flops, and the accelerator's signals reach the
    bridge's flip-flops through about a gate (its other inputs are flip-flops or logic of
    flip-flops): a command is registered as it is accepted, its length examined over the next
    two cycles, then its beats run; a write beat is registered and written the cycle after
    (reads wait); the read FIFO keeps its level, "not empty" and its free entries (credits) in
    registers."""

    def __init__(self, *, width_bytes: int, addr_bits: int, fifo_depth: int = 4,
                 read_latency: int = 1, out_reg: bool = False):
        if read_latency not in (1, 2, 3, 4):
            raise ValueError(f"'read_latency' must be 1, 2, 3 or 4, not {read_latency!r}")
        if fifo_depth not in (2, 4, 8, 16):
            raise ValueError(f"'fifo_depth' must be 2, 4, 8 or 16, not {fifo_depth!r}")
        self.V, self.addr_bits, self.fifo_depth = width_bytes, addr_bits, fifo_depth
        self.read_latency = read_latency
        self.out_reg = out_reg
        W = 8 * width_bytes
        super().__init__({
            "rd_cmd": In(CmdSignature()), "rd_data": Out(DataSignature(width=W)),
            "wr_cmd": In(CmdSignature()), "wr_data": In(DataSignature(width=W)),
            "mem": Out(MemPortSignature(addr_bits=addr_bits, data_bits=W)),
        })

    def elaborate(self, platform):
        m = Module()
        V, ab, D, L = self.V, self.addr_bits, self.fifo_depth, self.read_latency
        sv = V.bit_length() - 1
        rbeat, wbeat = Signal(), Signal()

        # read data: reads in flight (infl) -> FIFO -> rd_data, fall-through
        infl = Signal(L)
        m.d.sync += infl.eq(Cat(rbeat, infl[:-1]))
        push, pop = infl[-1], Signal()
        m.submodules.q = q = Memory(shape=8 * V, depth=D, init=[])
        qw, qr = q.write_port(), q.read_port(domain="comb")
        prod, cons = Signal(range(D)), Signal(range(D))
        level = Signal(range(D + 1))
        nonempty = Signal()
        cred = Signal(range(D + 1), init=D)     # FIFO entries not claimed by a read in flight
        m.d.comb += [qw.addr.eq(prod), qw.data.eq(self.mem.rdata), qw.en.eq(push), qr.addr.eq(cons)]
        if self.out_reg:
            # the head word in a register (one more word of buffering): rd_data leaves a
            # flip-flop, not the FIFO's LUT RAM, on its way to the accelerator's buffers
            ov, od = Signal(), Signal(8 * V, reset_less=True)
            m.d.comb += [pop.eq(nonempty & (~ov | self.rd_data.ready)),
                         self.rd_data.data.eq(od), self.rd_data.valid.eq(ov)]
            with m.If(pop):
                m.d.sync += [od.eq(qr.data), ov.eq(1)]
            with m.Elif(self.rd_data.ready):
                m.d.sync += ov.eq(0)
        else:
            m.d.comb += [self.rd_data.data.eq(qr.data), self.rd_data.valid.eq(nonempty),
                         pop.eq(nonempty & self.rd_data.ready)]
        with m.If(push):
            m.d.sync += prod.eq(prod + 1)
        lvl = Signal(range(D + 1))
        crd = Signal(range(D + 1))
        m.d.comb += [lvl.eq(level + push), crd.eq(cred - rbeat)]
        m.d.sync += [cons.eq(Mux(pop, cons + 1, cons)),
                     level.eq(Mux(pop, lvl - 1, lvl)),
                     nonempty.eq(Mux(pop, lvl > 1, lvl != 0)),
                     cred.eq(Mux(pop, crd + 1, crd))]

        def command(cmd, addr, left, beat, step):
            """A command channel: busy while a command is held (accepted, not finished); it is
            registered as accepted, its length looked at over the two cycles after (new, new2),
            then `active` until the last `beat`; the address advances with `step`.  hz: the high
            bits of `left` are 0, registered (stale only when the low bits are 15)."""
            busy, new, new2, active, last, hz = (Signal(name=n) for n in
                                                 ("busy", "new", "new2", "active", "last", "hz"))
            lo = left[:4]
            m.d.comb += cmd.ready.eq(~busy)
            m.d.sync += [busy.eq(Mux(busy, ~(new2 & hz & (lo == 0)) & ~(beat & last), cmd.valid)),
                         new.eq(~busy & cmd.valid), new2.eq(new), hz.eq(left[4:] == 0)]
            with m.If(new2):
                m.d.sync += [active.eq(~hz | (lo != 0)), last.eq(hz & (lo == 1))]
            with m.Elif(beat):
                m.d.sync += last.eq(hz & (lo == 2))
                with m.If(last):
                    m.d.sync += active.eq(0)
            with m.If(~busy | beat):
                m.d.sync += left.eq(Mux(busy, left - 1, cmd.len))
            with m.If(~busy | step):
                m.d.sync += addr.eq(Mux(busy, addr + 1, cmd.addr[sv:sv + ab]))
            return active

        r_addr, w_addr = Signal(ab), Signal(ab)
        r_left, w_left = Signal(16), Signal(16)
        w_pend = Signal()                   # a write beat registered, written this cycle
        w_data = Signal(8 * V, reset_less=timing_regs(platform))
        r_active = command(self.rd_cmd, r_addr, r_left, rbeat, rbeat)
        w_active = command(self.wr_cmd, w_addr, w_left, wbeat, w_pend)

        m.d.comb += [self.wr_data.ready.eq(w_active),
                     wbeat.eq(w_active & self.wr_data.valid),
                     rbeat.eq(r_active & ~w_pend & (cred != 0)),
                     self.mem.addr.eq(Mux(w_pend, w_addr, r_addr)),
                     self.mem.en.eq(w_pend | rbeat), self.mem.we.eq(w_pend),
                     self.mem.wdata.eq(w_data)]
        m.d.sync += [w_pend.eq(wbeat), w_data.eq(self.wr_data.data)]
        return m

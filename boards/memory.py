"""Memory standing in for DRAM on the boards: a single-port RAM and the accelerator-port bridge."""
from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from rtl.bus import CmdSignature, DataSignature
from sim.dram_model import MEM_MODULE

from .link import MemPortSignature

__all__ = ["GenericRam", "SpramRam", "DramBridge", "SPRAM_WORDS"]

#: one iCE40UP5K SB_SPRAM256KA: 16384 x 16 bits
SPRAM_WORDS = 16384


class GenericRam(wiring.Component):
    """``words`` x ``8*width_bytes`` bits: the Verilog black box ``sushi_dram_mem`` of
    :func:`sim.dram_model.mem_verilog` (add that file next to the design).  Yosys infers block RAM
    from it (ECP5); an Amaranth ``Memory`` this deep takes minutes to convert."""

    def __init__(self, *, width_bytes: int, words: int):
        self.width_bytes, self.words = width_bytes, words
        super().__init__({"port": In(MemPortSignature(addr_bits=max(1, (words - 1).bit_length()),
                                                      data_bits=8 * width_bytes))})

    def elaborate(self, platform):
        m = Module()
        p = self.port
        m.submodules.mem = Instance(
            MEM_MODULE, p_W=8 * self.width_bytes, p_AW=len(p.addr), i_clk=ClockSignal("sync"),
            i_raddr=p.addr, i_ren=p.en & ~p.we, o_rdata=p.rdata,
            i_waddr=p.addr, i_we=p.en & p.we, i_wdata=p.wdata)
        return m


class SpramRam(wiring.Component):
    """The four iCE40UP5K SPRAMs (128 KiB) as one ``8*width_bytes``-bit single-port memory:
    ``width_bytes/2`` SPRAMs side by side per bank, ``8/width_bytes`` banks."""

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
    are taken modulo the memory size."""

    def __init__(self, *, width_bytes: int, addr_bits: int, fifo_depth: int = 4):
        self.V, self.addr_bits, self.fifo_depth = width_bytes, addr_bits, fifo_depth
        W = 8 * width_bytes
        super().__init__({
            "rd_cmd": In(CmdSignature()), "rd_data": Out(DataSignature(width=W)),
            "wr_cmd": In(CmdSignature()), "wr_data": In(DataSignature(width=W)),
            "mem": Out(MemPortSignature(addr_bits=addr_bits, data_bits=W)),
        })

    def elaborate(self, platform):
        m = Module()
        V, ab = self.V, self.addr_bits
        sv = V.bit_length() - 1
        m.submodules.q = q = fifo.SyncFIFO(width=8 * V, depth=self.fifo_depth)
        r_active, w_active = Signal(), Signal()
        r_addr, w_addr = Signal(ab), Signal(ab)
        r_left, w_left = Signal(16), Signal(16)
        inflight = Signal()
        m.d.comb += [self.rd_cmd.ready.eq(~r_active), self.wr_cmd.ready.eq(~w_active),
                     self.rd_data.valid.eq(q.r_rdy), self.rd_data.data.eq(q.r_data),
                     q.r_en.eq(self.rd_data.ready),
                     q.w_en.eq(inflight), q.w_data.eq(self.mem.rdata)]
        with m.If(self.rd_cmd.valid & ~r_active):
            m.d.sync += [r_addr.eq(self.rd_cmd.addr[sv:sv + ab]), r_left.eq(self.rd_cmd.len),
                         r_active.eq(self.rd_cmd.len != 0)]
        with m.If(self.wr_cmd.valid & ~w_active):
            m.d.sync += [w_addr.eq(self.wr_cmd.addr[sv:sv + ab]), w_left.eq(self.wr_cmd.len),
                         w_active.eq(self.wr_cmd.len != 0)]
        wbeat = Signal()
        rbeat = Signal()
        m.d.comb += [wbeat.eq(w_active & self.wr_data.valid),
                     rbeat.eq(~wbeat & r_active & (q.level + inflight < self.fifo_depth))]
        m.d.comb += self.wr_data.ready.eq(wbeat)
        m.d.sync += inflight.eq(rbeat)
        with m.If(wbeat):
            m.d.comb += [self.mem.addr.eq(w_addr), self.mem.en.eq(1), self.mem.we.eq(1),
                         self.mem.wdata.eq(self.wr_data.data)]
            m.d.sync += [w_addr.eq(w_addr + 1), w_left.eq(w_left - 1)]
            with m.If(w_left == 1):
                m.d.sync += w_active.eq(0)
        with m.Elif(rbeat):
            m.d.comb += [self.mem.addr.eq(r_addr), self.mem.en.eq(1)]
            m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1)]
            with m.If(r_left == 1):
                m.d.sync += r_active.eq(0)
        return m

"""Control/status registers and the performance counters of SUSHI (map in docs/isa.md)."""
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import ISA_VERSION, INSTR_BYTES

from .bus import CsrSignature

__all__ = ["CsrBlock", "CSR_MAP", "COUNTERS"]

#: CSR index by name (docs/isa.md)
CSR_MAP = {
    "CTRL": 0, "STATUS": 1, "PROG_BASE": 2, "WEIGHT_BASE": 3, "CYCLES": 4, "W_RD_BYTES": 5,
    "ACT_RD_BYTES": 6, "ACT_WR_BYTES": 7, "INSTR_RD_BYTES": 8, "PB_HITS": 9, "PB_MISSES": 10,
    "INSTRS": 11, "MAC_CYCLES": 12, "HW_ID": 13,
}
#: counter strobe port name -> CSR name; every strobe adds the counter's unit (see CsrBlock)
COUNTERS = {
    "cycles": "CYCLES", "w_rd": "W_RD_BYTES", "act_rd": "ACT_RD_BYTES", "act_wr": "ACT_WR_BYTES",
    "instr_rd": "INSTR_RD_BYTES", "pb_hit": "PB_HITS", "pb_miss": "PB_MISSES", "instr": "INSTRS",
    "mac": "MAC_CYCLES",
}


class CsrBlock(wiring.Component):
    """CSR file.  ``start`` pulses on a START write while idle and clears every counter.

    Counter strobes ``inc_<name>`` add one unit per cycle: V bytes for the DRAM beat counters,
    INSTR_BYTES for ``instr_rd`` and 1 for the others.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        ports = {
            "bus": In(CsrSignature()),
            "start": Out(1),
            "prog_base": Out(32), "weight_base": Out(32),
            "busy": In(1), "done": In(1), "error": In(8),
        }
        for n in COUNTERS:
            ports[f"inc_{n}"] = In(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg, V = self.cfg, self.cfg.pe_cols
        unit = {"w_rd": V, "act_rd": V, "act_wr": V, "instr_rd": INSTR_BYTES}
        regs = {}
        m.d.comb += self.start.eq(self.bus.we & (self.bus.addr == CSR_MAP["CTRL"])
                                  & self.bus.wdata[0] & ~self.busy)
        # DRAM bases: dram_addr_bits wide (higher bits read back as 0)
        A = cfg.dram_addr_bits
        pbase, wbase = Signal(A), Signal(A)
        m.d.comb += [self.prog_base.eq(pbase), self.weight_base.eq(wbase)]
        with m.If(self.bus.we & (self.bus.addr == CSR_MAP["PROG_BASE"])):
            m.d.sync += pbase.eq(self.bus.wdata)
        with m.If(self.bus.we & (self.bus.addr == CSR_MAP["WEIGHT_BASE"])):
            m.d.sync += wbase.eq(self.bus.wdata)
        for n, csr in COUNTERS.items():
            if n != "cycles" and not cfg.perf_counters:
                continue                # reads 0
            r = Signal(32, name=f"cnt_{n}")
            regs[CSR_MAP[csr]] = r
            with m.If(self.start):
                m.d.sync += r.eq(0)
            with m.Elif(getattr(self, f"inc_{n}")):
                m.d.sync += r.eq(r + unit.get(n, 1))
        regs[CSR_MAP["STATUS"]] = self.busy | (self.done << 1) | (self.error << 8)
        regs[CSR_MAP["PROG_BASE"]] = self.prog_base
        regs[CSR_MAP["WEIGHT_BASE"]] = self.weight_base
        regs[CSR_MAP["HW_ID"]] = (ISA_VERSION << 24) | (cfg.pe_rows << 8) | cfg.pe_cols
        with m.Switch(self.bus.addr):
            for a, v in regs.items():
                with m.Case(a):
                    m.d.comb += self.bus.rdata.eq(v)
            with m.Default():
                m.d.comb += self.bus.rdata.eq(0)
        return m

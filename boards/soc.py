"""SushiSoC: SushiAccel + HostLink (UART or byte stream) + a memory standing in for DRAM."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.accel import SushiAccel
from rtl.bus import fanout_copies, timing_regs
from sushi.config import AccelConfig

from .link import HostLink, UartRx, UartTx
from .memory import DramBridge, GenericRam, SpramRam

__all__ = ["SushiSoC", "SOC_NAME"]

SOC_NAME = "sushi_soc"


class SushiSoC(wiring.Component):
    """The accelerator, its memory and the host link (docs/boards.md).

    ``ram``: ``"generic"`` (inferred memory of ``mem_bytes``: ECP5 block RAM, simulation) or
    ``"spram"`` (the iCE40UP5K's four SPRAMs, 128 KiB).  ``link``: ``"uart"`` (ports ``uart_rx``,
    ``uart_tx``; ``divisor`` clock cycles per bit) or ``"stream"`` (byte streams ``rx``/``tx`` at the
    UART boundary, used by the simulation).  ``timeout_cycles``: the inter-byte timeout of a frame.
    Ports ``running`` (the accelerator works) and ``error`` (STATUS error code != 0 at the link's
    last STATUS read) drive LEDs.  The stream link takes at most a byte every two cycles
    (back-pressure on ``rx``).  The memory's read data is registered before the link and the
    bridge see it (read latency: the memory's plus one; 2 with the SPRAMs, 4 with the banked
    block RAM): a memory output goes straight into a flip-flop.
    """

    def __init__(self, cfg: AccelConfig, *, ram: str = "generic", mem_bytes: int = 1 << 17,
                 link: str = "uart", divisor: int = 104, timeout_cycles: int = 1 << 20):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"'cfg' must be an AccelConfig, not {cfg!r}")
        if ram not in ("generic", "spram"):
            raise ValueError(f"'ram' must be 'generic' or 'spram', not {ram!r}")
        if link not in ("uart", "stream"):
            raise ValueError(f"'link' must be 'uart' or 'stream', not {link!r}")
        V = cfg.pe_cols
        if ram == "spram":
            mem_bytes = 1 << 17        # four SPRAMs, whatever the width
        if mem_bytes % V or (mem_bytes // V) & (mem_bytes // V - 1):
            raise ValueError(f"'mem_bytes' must be a power of two multiple of {V}, not {mem_bytes}")
        self.cfg, self.ram, self.link = cfg, ram, link
        self.mem_bytes = mem_bytes
        self.mem_words = mem_bytes // V
        self.divisor, self.timeout_cycles = divisor, timeout_cycles
        ports = ({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))} if link == "stream"
                 else {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)})
        super().__init__({**ports, "running": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg, V = self.cfg, self.cfg.pe_cols
        m.submodules.accel = accel = SushiAccel(cfg)
        if self.ram == "spram":
            ram = SpramRam(width_bytes=V)
        else:   # block RAM (ECP5, simulation) in 8 banks, each with its own registered port copy
            ram = GenericRam(width_bytes=V, words=self.mem_words, banks=min(8, self.mem_words))
        lat = ram.read_latency + 1          # and the read data register below
        m.submodules.link = link = HostLink(width_bytes=V, mem_words=self.mem_words,
                                            timeout_cycles=self.timeout_cycles, read_latency=lat)
        m.submodules.ram = ram
        # the read data registered on the way out, but for the iCE40 (every flip-flop a logic cell)
        # (a deeper read FIFO behind the longer block RAM latency: reads keep one beat a cycle)
        m.submodules.bridge = br = DramBridge(width_bytes=V, addr_bits=link.abits, read_latency=lat,
                                              out_reg=self.ram != "spram",
                                              fifo_depth=4 if self.ram == "spram" else 8)

        wiring.connect(m, link.csr, accel.csr)
        for ch in ("rd_cmd", "wr_cmd", "wr_data"):
            wiring.connect(m, getattr(accel, ch), getattr(br, ch))
        wiring.connect(m, br.rd_data, accel.rd_data)

        # memory: the bridge while the accelerator runs, the host link otherwise
        rp = ram.port
        if not timing_regs(platform):
            src = Signal()
            m.d.comb += src.eq(link.running)
        rdata = Signal(8 * V, reset_less=timing_regs(platform))    # registered (``lat``, link and bridge)
        m.d.sync += rdata.eq(rp.rdata)
        m.d.comb += [link.mem.rdata.eq(rdata), br.mem.rdata.eq(rdata)]
        if timing_regs(platform):
            # the select from registered copies of ``running``, one per byte lane of the write
            # data and one for the control (the lanes' muxes feed the banks across the die):
            # a cycle late, which no access sees: the link sets ``running`` two cycles before
            # its START write, and after clearing it sends a reply before it can touch memory
            srcs = fanout_copies(m, link.running, V + 1, "mem_src")
            with m.If(srcs[V]):
                m.d.comb += [rp.addr.eq(br.mem.addr), rp.en.eq(br.mem.en), rp.we.eq(br.mem.we)]
            with m.Else():
                m.d.comb += [rp.addr.eq(link.mem.addr), rp.en.eq(link.mem.en), rp.we.eq(link.mem.we)]
            for j in range(V):
                m.d.comb += rp.wdata[8 * j:8 * j + 8].eq(Mux(srcs[j], br.mem.wdata[8 * j:8 * j + 8],
                                                             link.mem.wdata[8 * j:8 * j + 8]))
        else:
            with m.If(src):
                m.d.comb += [rp.addr.eq(br.mem.addr), rp.en.eq(br.mem.en), rp.we.eq(br.mem.we),
                             rp.wdata.eq(br.mem.wdata)]
            with m.Else():
                m.d.comb += [rp.addr.eq(link.mem.addr), rp.en.eq(link.mem.en), rp.we.eq(link.mem.we),
                             rp.wdata.eq(link.mem.wdata)]

        if self.link == "stream":
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))
        else:
            m.submodules.urx = urx = UartRx(self.divisor)
            m.submodules.utx = utx = UartTx(self.divisor)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
            wiring.connect(m, urx.o, link.rx)
            wiring.connect(m, link.tx, utx.i)

        # error: the accelerator's error code at the link's last STATUS read
        m.d.comb += [self.running.eq(link.running), self.error.eq(link.error)]
        return m

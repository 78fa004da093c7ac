"""HostLink: the framed host protocol of docs/boards.md over a byte stream, plus an 8N1 UART."""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bus import CsrSignature
from sushi.runtime.protocol import Cmd, Code, MAX_DATA, MAX_PAYLOAD, PROTO_VERSION, SYNC_REP, SYNC_REQ

__all__ = ["HostLink", "MemPortSignature", "UartRx", "UartTx", "crc16_step"]


class MemPortSignature(wiring.Signature):
    """A single-port synchronous memory (initiator view): ``rdata`` is valid the cycle after
    ``en & ~we``; ``en & we`` writes ``wdata`` at ``addr`` (word address)."""

    def __init__(self, *, addr_bits: int, data_bits: int):
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__({"addr": Out(addr_bits), "en": Out(1), "we": Out(1),
                          "wdata": Out(data_bits), "rdata": In(data_bits)})

    def __eq__(self, other):
        return (isinstance(other, MemPortSignature) and other.addr_bits == self.addr_bits
                and other.data_bits == self.data_bits)

    def __repr__(self):
        return f"MemPortSignature(addr_bits={self.addr_bits}, data_bits={self.data_bits})"


def crc16_step(m, crc, byte, name="crc"):
    """CRC-16/CCITT-FALSE of one more byte: a 16-bit signal (comb logic added to ``m``)."""
    c = Signal(16, name=f"{name}_s0")
    m.d.comb += c.eq(crc ^ (byte << 8))
    for i in range(8):
        n = Signal(16, name=f"{name}_s{i + 1}")
        m.d.comb += n.eq((c << 1)[:16] ^ Mux(c[15], 0x1021, 0))
        c = n
    return c


class UartRx(wiring.Component):
    """8N1 receiver: ``divisor`` clock cycles per bit; a byte that is not taken before the next one
    completes is overwritten."""
    rx: In(1, init=1)
    o: Out(stream.Signature(8))

    def __init__(self, divisor: int):
        if not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"'divisor' must be an integer >= 4, not {divisor!r}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        s1, s = Signal(init=1), Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s.eq(s1)]
        cnt = Signal(range(d))
        bit = Signal(range(8))
        sh = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~s):
                    m.d.sync += cnt.eq(d // 2)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.d.sync += [cnt.eq(d - 1), bit.eq(0)]
                    with m.If(s):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "BITS"
            with m.State("BITS"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    m.d.sync += [sh.eq(Cat(sh[1:], s)), cnt.eq(d - 1), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += cnt.eq(cnt - 1)
                with m.If(cnt == 0):
                    with m.If(s):
                        m.d.sync += [self.o.payload.eq(sh), self.o.valid.eq(1)]
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """8N1 transmitter: ``divisor`` clock cycles per bit."""
    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        if not isinstance(divisor, int) or divisor < 4:
            raise ValueError(f"'divisor' must be an integer >= 4, not {divisor!r}")
        self.divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        cnt = Signal(range(d))
        sh = Signal(10, init=0x3FF)
        left = Signal(range(11))
        m.d.comb += [self.i.ready.eq(left == 0), self.tx.eq(sh[0])]
        with m.If(left == 0):
            with m.If(self.i.valid):
                m.d.sync += [sh.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))), left.eq(10),
                             cnt.eq(d - 1)]
        with m.Elif(cnt == 0):
            m.d.sync += [sh.eq(Cat(sh[1:], Const(1, 1))), left.eq(left - 1), cnt.eq(d - 1)]
        with m.Else():
            m.d.sync += cnt.eq(cnt - 1)
        return m


class HostLink(wiring.Component):
    """Parses request frames from ``rx``, executes them on the memory port ``mem`` and the
    accelerator's CSR port ``csr``, and sends one reply frame per request on ``tx``.

    ``running`` is 1 from START to done of a LOAD_SG / RUN: the accelerator owns the memory then.
    ``timeout_cycles``: a frame whose next byte does not come within this many cycles is answered
    with Code.TIMEOUT; an oversized frame is discarded until the line has been idle this long, then
    answered with Code.OVERSIZED."""

    def __init__(self, *, width_bytes: int, mem_words: int, timeout_cycles: int):
        V = width_bytes
        if V not in (2, 4, 8, 16, 32, 64):
            raise ValueError(f"'width_bytes' must be a power of two in 2..64, not {V!r}")
        if not isinstance(mem_words, int) or mem_words <= 0 or mem_words & (mem_words - 1):
            raise ValueError(f"'mem_words' must be a power of two, not {mem_words!r}")
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"'timeout_cycles' must be an integer >= 16, not {timeout_cycles!r}")
        self.V, self.mem_words, self.timeout_cycles = V, mem_words, timeout_cycles
        self.abits = max(1, (mem_words - 1).bit_length())
        super().__init__({
            "rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
            "csr": Out(CsrSignature()),
            "mem": Out(MemPortSignature(addr_bits=self.abits, data_bits=8 * V)),
            "running": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        V, abits = self.V, self.abits
        sv = V.bit_length() - 1
        mem_bytes = self.mem_words * V
        rx, tx, csr, mem = self.rx, self.tx, self.csr, self.mem

        cmd = Signal(8)
        PB = MAX_PAYLOAD.bit_length()       # payload lengths and byte counters (<= MAX_PAYLOAD)
        length = Signal(PB)                 # only kept when <= MAX_PAYLOAD (else DISCARD)
        idx = Signal(PB)
        args = Signal(64)
        crc = Signal(16)
        crc_lo = Signal(8)
        code = Signal(8)
        idle = Signal(range(self.timeout_cycles + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self.timeout_cycles)
        got = Signal()
        m.d.comb += got.eq(rx.valid & rx.ready)
        # one CRC step for both directions (a frame is received, then its reply sent)
        txing = Signal()
        crc_rx = crc_tx = crc16_step(m, crc, Mux(txing, tx.payload, rx.payload), "crc")

        # staging buffer for WRITE_MEM data (checked by the CRC before any memory write)
        m.submodules.sbuf = sbuf = Memory(shape=8, depth=MAX_DATA, init=[])
        swp = sbuf.write_port()
        srp = sbuf.read_port()

        addr = args[0:32]
        nread = args[32:48]
        ndata = Signal(PB)
        m.d.comb += ndata.eq(length - 4)
        waddr = Signal(abits)
        ci = Signal(PB)
        word = Signal(8 * V)

        # reply
        K_NONE, K_STATUS, K_COUNTERS, K_RUN, K_MEM = range(5)
        kind = Signal(3)
        rlen = Signal(PB)
        ri = Signal(3)
        pi = Signal(PB)
        wsel = Signal(32)
        tables = {K_STATUS: [1, 13, ("c", mem_bytes), ("c", PROTO_VERSION | MAX_PAYLOAD << 16)],
                  K_COUNTERS: [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
                  K_RUN: [1, 4]}
        in_pay = Signal()
        with m.If(in_pay):
            with m.Switch(kind):
                for k, tab in tables.items():
                    with m.Case(k):
                        with m.Switch(pi[2:]):
                            for wi, src in enumerate(tab):
                                with m.Case(wi):
                                    if isinstance(src, tuple):
                                        m.d.comb += wsel.eq(src[1])
                                    else:
                                        m.d.comb += [csr.addr.eq(src), wsel.eq(csr.rdata)]

        def reply(m, c, n=0, k=K_NONE):
            m.d.sync += [code.eq(c), rlen.eq(n), kind.eq(k), ri.eq(0), pi.eq(0)]
            m.next = "TX_HDR"

        # WRITE_MEM (n = ndata) / READ_MEM (n = nread) range check, one circuit for both:
        # a + n <= mem_bytes (a power of two) <=> a < mem_bytes and a mod mem_bytes + n <= mem_bytes
        mb = mem_bytes.bit_length() - 1
        rng_n = Signal(16)
        rng_ok = Signal()
        m.d.comb += [rng_n.eq(Mux(cmd == Cmd.READ_MEM, nread, ndata)),
                     rng_ok.eq((addr[:sv] == 0) & (rng_n[:sv] == 0) & (addr[mb:] == 0)
                               & ((addr[:mb] + rng_n) <= mem_bytes))]

        rng_ok_r = Signal()                 # registered in CHK: EXEC decides from flip-flops

        def in_range(a, n):
            return rng_ok_r

        # idle counter: counts inside a frame, cleared by every received byte
        with m.If(got):
            m.d.sync += idle.eq(0)

        with m.FSM():
            with m.State("HUNT"):
                m.d.comb += rx.ready.eq(1)
                m.d.sync += [idle.eq(0), crc.eq(0xFFFF), idx.eq(0), args.eq(0), cmd.eq(0)]
                with m.If(got & (rx.payload == SYNC_REQ)):
                    m.next = "CMD"

            def frame_state(name, body):
                with m.State(name):
                    m.d.comb += rx.ready.eq(1)
                    with m.If(got):
                        m.d.sync += crc.eq(crc_rx)
                        body()
                    with m.Elif(timed_out):
                        reply(m, Code.TIMEOUT)
                    with m.Else():
                        m.d.sync += idle.eq(idle + 1)

            def s_cmd():
                m.d.sync += cmd.eq(rx.payload)
                m.next = "LEN0"
            frame_state("CMD", s_cmd)

            def s_len0():
                m.d.sync += length[:8].eq(rx.payload)
                m.next = "LEN1"
            frame_state("LEN0", s_len0)

            def s_len1():
                n = Cat(length[:8], rx.payload)
                m.d.sync += length[8:].eq(rx.payload)
                with m.If(n > MAX_PAYLOAD):
                    m.next = "DISCARD"
                with m.Elif(n == 0):
                    m.next = "CRC0"
                with m.Else():
                    m.next = "PAY"
            frame_state("LEN1", s_len1)

            def s_pay():
                with m.If(idx < 8):
                    with m.Switch(idx[:3]):
                        for k in range(8):
                            with m.Case(k):
                                m.d.sync += args[8 * k:8 * k + 8].eq(rx.payload)
                with m.If(idx >= 4):
                    m.d.comb += [swp.addr.eq(idx - 4), swp.data.eq(rx.payload), swp.en.eq(1)]
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx == length - 1):
                    m.next = "CRC0"
            frame_state("PAY", s_pay)

            with m.State("CRC0"):
                m.d.comb += rx.ready.eq(1)
                with m.If(got):
                    m.d.sync += crc_lo.eq(rx.payload)
                    m.next = "CRC1"
                with m.Elif(timed_out):
                    reply(m, Code.TIMEOUT)
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)
            with m.State("CRC1"):
                m.d.comb += rx.ready.eq(1)
                with m.If(got):
                    with m.If(Cat(crc_lo, rx.payload) == crc):
                        m.next = "CHK"
                    with m.Else():
                        reply(m, Code.BAD_CRC)
                with m.Elif(timed_out):
                    reply(m, Code.TIMEOUT)
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)

            with m.State("DISCARD"):
                m.d.comb += rx.ready.eq(1)
                with m.If(timed_out):
                    reply(m, Code.OVERSIZED)
                with m.Elif(~got):
                    m.d.sync += idle.eq(idle + 1)

            with m.State("CHK"):
                m.d.sync += rng_ok_r.eq(rng_ok)
                m.next = "EXEC"

            with m.State("EXEC"):
                with m.Switch(cmd):
                    with m.Case(Cmd.STATUS):
                        with m.If(length != 0):
                            reply(m, Code.BAD_LENGTH)
                        with m.Else():
                            reply(m, Code.OK, 16, K_STATUS)
                    with m.Case(Cmd.READ_COUNTERS):
                        with m.If(length != 0):
                            reply(m, Code.BAD_LENGTH)
                        with m.Else():
                            reply(m, Code.OK, 4 * len(tables[K_COUNTERS]), K_COUNTERS)
                    with m.Case(Cmd.WRITE_MEM):
                        with m.If(length < 4):
                            reply(m, Code.BAD_LENGTH)
                        with m.Elif(~in_range(addr, ndata)):
                            reply(m, Code.BAD_ADDRESS)
                        with m.Elif(ndata == 0):
                            reply(m, Code.OK)
                        with m.Else():
                            m.d.sync += [waddr.eq(addr[sv:sv + abits]), ci.eq(0)]
                            m.next = "C_RD"
                    with m.Case(Cmd.READ_MEM):
                        with m.If((length != 6) | (nread > MAX_DATA)):
                            reply(m, Code.BAD_LENGTH)
                        with m.Elif(~in_range(addr, nread)):
                            reply(m, Code.BAD_ADDRESS)
                        with m.Else():
                            m.d.sync += waddr.eq(addr[sv:sv + abits])
                            reply(m, Code.OK, nread, K_MEM)
                    with m.Case(Cmd.LOAD_SG, Cmd.RUN):
                        with m.If(length != 8):
                            reply(m, Code.BAD_LENGTH)
                        with m.Else():
                            m.next = "R_PROG"
                    with m.Default():
                        reply(m, Code.UNKNOWN_CMD)

            # WRITE_MEM: staging buffer -> memory, one byte per two cycles, one word per V bytes
            with m.State("C_RD"):
                m.d.comb += [srp.addr.eq(ci), srp.en.eq(1)]
                m.next = "C_SH"
            with m.State("C_SH"):
                m.d.sync += [word.eq(Cat(word[8:], srp.data)), ci.eq(ci + 1)]
                with m.If(ci[:sv] == V - 1):
                    m.next = "C_WR"
                with m.Else():
                    m.next = "C_RD"
            with m.State("C_WR"):
                m.d.comb += [mem.addr.eq(waddr), mem.en.eq(1), mem.we.eq(1), mem.wdata.eq(word)]
                m.d.sync += waddr.eq(waddr + 1)
                with m.If(ci == ndata):
                    reply(m, Code.OK)
                with m.Else():
                    m.next = "C_RD"

            # LOAD_SG / RUN
            with m.State("R_PROG"):
                m.d.comb += [csr.addr.eq(2), csr.wdata.eq(args[0:32]), csr.we.eq(1)]
                m.next = "R_WB"
            with m.State("R_WB"):
                m.d.comb += [csr.addr.eq(3), csr.wdata.eq(args[32:64]), csr.we.eq(1)]
                m.next = "R_START"
            with m.State("R_START"):
                m.d.comb += [csr.addr.eq(0), csr.wdata.eq(1), csr.we.eq(1), self.running.eq(1)]
                m.next = "R_WAIT0"
            with m.State("R_WAIT0"):
                m.d.comb += self.running.eq(1)
                m.next = "R_WAIT"
            with m.State("R_WAIT"):
                m.d.comb += [self.running.eq(1), csr.addr.eq(1)]
                with m.If(~csr.rdata[0]):
                    reply(m, Code.OK, 8, K_RUN)

            # reply frame
            with m.State("TX_HDR"):
                m.d.comb += txing.eq(1)
                hdr = Array([Const(SYNC_REP, 8), cmd, code, rlen[:8], rlen[8:]])
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(hdr[ri])]
                with m.If(tx.ready):
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri == 0):
                        m.d.sync += crc.eq(0xFFFF)
                    with m.Else():
                        m.d.sync += crc.eq(crc_tx)
                    with m.If(ri == 4):
                        m.d.sync += ri.eq(0)
                        with m.If(rlen == 0):
                            m.next = "TX_CRC"
                        with m.Elif(kind == K_MEM):
                            m.next = "TX_FETCH"
                        with m.Else():
                            m.next = "TX_PAY"
            with m.State("TX_FETCH"):
                m.d.comb += [mem.addr.eq(waddr), mem.en.eq(1)]
                m.d.sync += waddr.eq(waddr + 1)
                m.next = "TX_LATCH"
            with m.State("TX_LATCH"):
                m.d.sync += word.eq(mem.rdata)
                m.next = "TX_PAY"
            with m.State("TX_PAY"):
                m.d.comb += txing.eq(1)
                m.d.comb += [in_pay.eq(1), tx.valid.eq(1),
                             tx.payload.eq(Mux(kind == K_MEM, word[:8], wsel.word_select(pi[:2], 8)))]
                with m.If(tx.ready):
                    m.d.sync += [crc.eq(crc_tx), pi.eq(pi + 1), word.eq(word >> 8)]
                    with m.If(pi == rlen - 1):
                        m.next = "TX_CRC"
                    with m.Elif((kind == K_MEM) & (pi[:sv] == V - 1)):
                        m.next = "TX_FETCH"
            with m.State("TX_CRC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(Mux(ri[0], crc[8:], crc[:8]))]
                with m.If(tx.ready):
                    m.d.sync += ri.eq(ri + 1)
                    with m.If(ri[0]):
                        m.next = "HUNT"
        return m

"""HostLink: the framed host protocol of docs/boards.md over a byte stream, plus an 8N1 UART."""

import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.bus import CsrSignature, timing_regs
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


class _OneHot:
    """A one-hot state machine: a flip-flop per state, so that every decision is a gate or two from
    flip-flops (yosys does not re-encode an Amaranth FSM, whose state register has an initial
    value).  ``go(src, dst, cond)`` adds a transition; the transitions out of a state must have
    mutually exclusive conditions.  ``build()`` adds the next-state logic."""

    def __init__(self, m, names, init):
        self.m = m
        self.s = {n: Signal(name=f"st_{n.lower()}", init=int(n == init)) for n in names}
        self.moves = []

    def __getitem__(self, name):
        return self.s[name]

    def any(self, *names):
        return _or(self.s[n] for n in names)

    def go(self, src, dst, cond=1):
        assert src != dst
        self.moves.append((src, Value.cast(cond), dst))

    def build(self):
        for n, st in self.s.items():
            into = [self.s[a] & c for a, c, b in self.moves if b == n]
            leave = [c for a, c, b in self.moves if a == n]
            stay = st & ~_or(leave) if leave else st
            self.m.d.sync += st.eq(_or(into + [stay]))


def _or(values):
    values = list(values)
    return reduce(operator.or_, values) if values else Const(0, 1)


class HostLink(wiring.Component):
    """Parses request frames from ``rx``, executes them on the memory port ``mem`` and the
    accelerator's CSR port ``csr``, and sends one reply frame per request on ``tx``.

    ``running`` is 1 from START to done of a LOAD_SG / RUN: the accelerator owns the memory then.
    ``error`` is 1 when the accelerator's error code (STATUS bits 15..8) was nonzero at the last
    read of STATUS.  ``timeout_cycles``: a frame whose next byte does not come within this many
    cycles is answered with Code.TIMEOUT; an oversized frame is discarded until the line has been
    idle this long, then answered with Code.OVERSIZED.  ``read_latency``: cycles from a read of
    ``mem`` to its ``rdata`` (1: the memory itself; SushiSoC: its memory's plus its output
    register, 2 or 4).

    Timing: every decision is taken from flip-flops (a one-hot state machine; flags computed a
    cycle or more ahead).  A received byte waits in a register (``rx`` is ready while it is empty:
    at most one byte every two cycles); the CRC steps over a registered byte the cycle after it was
    taken or sent; the command, length and range checks are registered stages; reply bytes leave
    through a register (``tx`` valid and payload are flip-flops); the CSR port's outputs are
    registered, and its read data, like the memory's, is registered before any logic."""

    def __init__(self, *, width_bytes: int, mem_words: int, timeout_cycles: int,
                 read_latency: int = 1):
        V = width_bytes
        if V not in (2, 4, 8, 16, 32, 64):
            raise ValueError(f"'width_bytes' must be a power of two in 2..64, not {V!r}")
        if not isinstance(mem_words, int) or mem_words <= 0 or mem_words & (mem_words - 1):
            raise ValueError(f"'mem_words' must be a power of two, not {mem_words!r}")
        if not isinstance(timeout_cycles, int) or timeout_cycles < 16:
            raise ValueError(f"'timeout_cycles' must be an integer >= 16, not {timeout_cycles!r}")
        if read_latency not in (1, 2, 3, 4):
            raise ValueError(f"'read_latency' must be 1, 2, 3 or 4, not {read_latency!r}")
        self.V, self.mem_words, self.timeout_cycles = V, mem_words, timeout_cycles
        self.read_latency = read_latency
        self.abits = max(1, (mem_words - 1).bit_length())
        super().__init__({
            "rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
            "csr": Out(CsrSignature()),
            "mem": Out(MemPortSignature(addr_bits=self.abits, data_bits=8 * V)),
            "running": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        V, abits, T, L = self.V, self.abits, self.timeout_cycles, self.read_latency
        sv = V.bit_length() - 1
        mem_bytes = self.mem_words * V
        mb = mem_bytes.bit_length() - 1
        rx, tx, csr, mem = self.rx, self.tx, self.csr, self.mem
        PB = MAX_PAYLOAD.bit_length()       # payload lengths and byte counters (<= MAX_PAYLOAD)
        # the word register: V bytes, the byte being shifted in on top (written straight from the
        # staging buffer's block RAM), room for a 32-bit CSR value
        W = max(8 * V + 8, 32)
        nlat = max(L, 2)                    # TX_FETCH -> memory word (L), CSR word in crd (2)
        K_STATUS, K_COUNTERS, K_RUN = range(3)
        tables = {K_STATUS: [1, 13, None, None],        # None: the constants below
                  K_COUNTERS: [1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
                  K_RUN: [1, 4]}
        consts = [mem_bytes & 0xFFFFFFFF, PROTO_VERSION | MAX_PAYLOAD << 16]

        S = _OneHot(m, ["HUNT", "CMD", "LEN0", "LEN1", "LENCHK", "PAY", "CRC0", "CRC1", "CRCCHK",
                        "DISCARD", "CHK0", "CHK1", "CHK2", "EXEC", "C_RD", "C_SH", "C_WR", "C_NX",
                        "R_PROG", "R_WB", "R_START", "R_W0", "R_W1", "R_W2", "R_WAIT",
                        "TX_HDR", "TX_FETCH", *(f"TX_W{w}" for w in range(1, nlat)), "TX_LAT",
                        "TX_PAY", "TX_CRC"], init="HUNT")
        frame = ("CMD", "LEN0", "LEN1", "PAY", "CRC0", "CRC1")     # bytes of a frame, timed

        # -- received byte: taken from rx whenever the register is empty, consumed by `take`
        rb = Signal(8)
        rb_v = Signal()
        take = Signal()
        m.d.comb += [rx.ready.eq(~rb_v),
                     take.eq(rb_v & S.any("HUNT", *frame, "DISCARD"))]
        with m.If(~rb_v):
            m.d.sync += [rb.eq(rx.payload), rb_v.eq(rx.valid)]
        with m.Elif(take):
            m.d.sync += rb_v.eq(0)

        # -- idle counter: counts inside a frame, cleared by every received byte; timed_out is 1
        # only in a frame state (which is left only with a byte taken, and then idle restarts)
        idle = Signal(range(T + 2))
        counting = Signal()
        timed_out = Signal()
        m.d.comb += counting.eq(S.any(*frame, "DISCARD"))
        with m.If(counting & ~(rx.valid & ~rb_v)):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        m.d.sync += timed_out.eq(counting & (idle == T))
        to_reply = Signal()
        m.d.comb += to_reply.eq(timed_out & ~rb_v)

        # -- byte sent: tb/tb_v drive tx; `load` puts byte `ri` of the reply there (when empty)
        tb = Signal(8)
        tb_v = Signal()
        load = Signal()
        cmd = Signal(8)
        code = Signal(3)
        rlen = Signal(PB)
        ri = Signal(3)                      # 0..4 header, 5 payload, 6..7 CRC; 0 after a reply
        pi = Signal(PB)                     # payload byte
        pay_end = Signal()                  # pi is the last payload byte
        rl = timing_regs(platform)         # (data registers without a reset: see rtl.bus)
        word = Signal(W, reset_less=rl)
        crc = Signal(16)
        m.d.comb += [tx.valid.eq(tb_v), tx.payload.eq(tb),
                     load.eq(~tb_v & S.any("TX_HDR", "TX_PAY", "TX_CRC"))]
        txsrc = Array([Const(SYNC_REP, 8), cmd, code, rlen[:8], rlen[8:], word[:8], crc[:8],
                       crc[8:]])
        with m.If(load):
            m.d.sync += [tb.eq(txsrc[ri]), tb_v.eq(1)]
        with m.Elif(tx.ready):
            m.d.sync += tb_v.eq(0)

        # -- one CRC for both directions (a frame is received, then its reply sent): a step over
        # the byte taken (rb) or loaded (tb) the cycle before
        cgo = Signal()
        txing = Signal()
        nxt = crc16_step(m, crc, Mux(txing, tb, rb), "crc")
        m.d.sync += cgo.eq(rb_v & S.any("CMD", "LEN0", "LEN1", "PAY")
                           | load & (S["TX_HDR"] & (ri != 0) | S["TX_PAY"]))
        with m.If(S["HUNT"] | S["TX_HDR"] & load & (ri == 0)):
            m.d.sync += crc.eq(0xFFFF)
        with m.Elif(cgo):
            m.d.sync += crc.eq(nxt)
        with m.If(S["HUNT"]):
            m.d.sync += txing.eq(0)
        with m.Elif(S["TX_HDR"]):
            m.d.sync += txing.eq(1)

        # -- request
        m.submodules.sbuf = sbuf = Memory(shape=8, depth=MAX_DATA, init=[])
        swp = sbuf.write_port()             # WRITE_MEM data, checked by the CRC before any write
        srp = sbuf.read_port()
        length = Signal(PB)                 # only kept when <= MAX_PAYLOAD (else DISCARD)
        lm1 = Signal(PB)                    # length - 1
        idx = Signal(PB)
        args = Signal(64, reset_less=rl)      # cleared in HUNT
        addr, nread = args[0:32], args[32:48]
        crc_lo = Signal(8)
        n16 = Cat(length[:8], rb)           # in LEN1: the length with its high byte in rb
        lbig = Signal()
        lzero = Signal()
        pay_last = Signal()
        crc_ok_lo = Signal()
        crc_ok_hi = Signal()
        m.d.sync += [lbig.eq(n16 > MAX_PAYLOAD), lzero.eq(n16 == 0), pay_last.eq(idx == lm1),
                     crc_ok_lo.eq(crc_lo == crc[:8]), crc_ok_hi.eq(rb == crc[8:])]
        crc_ok = crc_ok_lo & crc_ok_hi
        m.d.comb += [swp.addr.eq(idx - 4), swp.data.eq(rb),
                     swp.en.eq(rb_v & S["PAY"] & (idx >= 4))]

        with m.If(S["HUNT"]):
            m.d.sync += [idx.eq(0), args.eq(0), cmd.eq(0), code.eq(Code.TIMEOUT), rlen.eq(0)]
        with m.If(rb_v):
            with m.If(S["CMD"]):
                m.d.sync += cmd.eq(rb)
            with m.If(S["LEN0"]):
                m.d.sync += length[:8].eq(rb)
            with m.If(S["LEN1"]):
                m.d.sync += [length[8:].eq(rb), lm1.eq(n16 - 1)]
            with m.If(S["PAY"]):
                m.d.sync += idx.eq(idx + 1)
                with m.If(idx < 8):
                    with m.Switch(idx[:3]):
                        for k in range(8):
                            with m.Case(k):
                                m.d.sync += args[8 * k:8 * k + 8].eq(rb)
            with m.If(S["CRC0"]):
                m.d.sync += crc_lo.eq(rb)
        S.go("HUNT", "CMD", rb_v & (rb == SYNC_REQ))
        for a, b in (("CMD", "LEN0"), ("LEN0", "LEN1"), ("LEN1", "LENCHK"), ("CRC0", "CRC1"),
                     ("CRC1", "CRCCHK")):
            S.go(a, b, rb_v)
        S.go("PAY", "CRC0", rb_v & pay_last)
        for a in frame + ("DISCARD",):
            S.go(a, "TX_HDR", to_reply)                     # code: TIMEOUT (HUNT) / OVERSIZED
        S.go("LENCHK", "DISCARD", lbig)
        S.go("LENCHK", "CRC0", ~lbig & lzero)
        S.go("LENCHK", "PAY", ~lbig & ~lzero)
        with m.If(S["DISCARD"]):
            m.d.sync += code.eq(Code.OVERSIZED)
        with m.If(S["CRCCHK"]):
            m.d.sync += code.eq(Code.BAD_CRC)
        S.go("CRCCHK", "CHK0", crc_ok)
        S.go("CRCCHK", "TX_HDR", ~crc_ok)

        # -- checks: registered stages from cmd, length and args (which do not change after
        # CRC1); CRCCHK and CHK0..2 give them time
        # stage 1
        f_st, f_cnt, f_wr, f_rd, f_run = (Signal(name=n)
                                          for n in ("f_st", "f_cnt", "f_wr", "f_rd", "f_run"))
        len0, len4, len6, len8, len_lt4 = (Signal(name=n)
                                           for n in ("len0", "len4", "len6", "len8", "len_lt4"))
        nbig, a_al, a_hi = Signal(name="nbig"), Signal(name="a_al"), Signal(name="a_hi")
        ndata = Signal(PB)
        m.d.sync += [f_st.eq(cmd == Cmd.STATUS), f_cnt.eq(cmd == Cmd.READ_COUNTERS),
                     f_wr.eq(cmd == Cmd.WRITE_MEM), f_rd.eq(cmd == Cmd.READ_MEM),
                     f_run.eq((cmd == Cmd.LOAD_SG) | (cmd == Cmd.RUN)),
                     len0.eq(length == 0), len4.eq(length == 4), len6.eq(length == 6),
                     len8.eq(length == 8), len_lt4.eq(length < 4), nbig.eq(nread > MAX_DATA),
                     ndata.eq(length - 4), a_al.eq(addr[:sv] == 0), a_hi.eq(addr[mb:] == 0)]
        # stage 2: WRITE_MEM (n = ndata) and READ_MEM (n = nread) share one range check; n has PB
        # bits (a longer READ_MEM is BAD_LENGTH, which comes first)
        rng_n = Signal(PB)
        unknown = Signal()
        bad_len = Signal()
        m.d.sync += [rng_n.eq(Mux(f_rd, nread[:PB], ndata)),
                     unknown.eq(~(f_st | f_cnt | f_wr | f_rd | f_run)),
                     bad_len.eq(((f_st | f_cnt) & ~len0) | (f_wr & len_lt4)
                                | (f_rd & (~len6 | nbig)) | (f_run & ~len8))]
        # stages 3, 4: a + n <= mem_bytes (a power of two) <=> a < mem_bytes and
        # a mod mem_bytes + n <= mem_bytes
        rsum = Signal(max(mb, PB) + 1, reset_less=rl)
        al_ok = Signal()
        sum_ok = Signal()
        m.d.sync += [rsum.eq(addr[:mb] + rng_n), al_ok.eq(a_al & a_hi & (rng_n[:sv] == 0)),
                     sum_ok.eq(rsum <= mem_bytes)]
        bad_addr = (f_wr | f_rd) & ~(al_ok & sum_ok)
        # stage 5: the outcome
        err = unknown | bad_len | bad_addr
        x_code = Signal(3)
        x_rlen = Signal(PB)
        x_kind = Signal(2)
        x_kmem = Signal()
        x_copy = Signal()
        x_run = Signal()
        m.d.sync += [x_code.eq(Mux(unknown, Code.UNKNOWN_CMD, Mux(bad_len, Code.BAD_LENGTH,
                                                                  Mux(bad_addr, Code.BAD_ADDRESS,
                                                                      Code.OK)))),
                     x_rlen.eq(Mux(err, 0, Mux(f_rd, nread[:PB], Mux(f_st, 16, Mux(
                         f_cnt, 4 * len(tables[K_COUNTERS]), Mux(f_run, 8, 0)))))),
                     x_kind.eq(Mux(f_st, K_STATUS, Mux(f_cnt, K_COUNTERS, K_RUN))),
                     x_kmem.eq(f_rd), x_copy.eq(~err & f_wr & ~len4), x_run.eq(~err & f_run)]
        S.go("CHK0", "CHK1")
        S.go("CHK1", "CHK2")
        S.go("CHK2", "EXEC")

        kind = Signal(2)
        kmem = Signal()
        waddr = Signal(abits)
        ci = Signal(PB)
        ci_done = Signal()
        m.d.sync += ci_done.eq(ci == ndata)
        with m.If(S["EXEC"]):
            m.d.sync += [code.eq(x_code), rlen.eq(x_rlen), kind.eq(x_kind), kmem.eq(x_kmem),
                         waddr.eq(addr[sv:sv + abits]), ci.eq(0)]
        S.go("EXEC", "C_RD", x_copy)
        S.go("EXEC", "R_PROG", x_run)
        S.go("EXEC", "TX_HDR", ~x_copy & ~x_run)

        # -- WRITE_MEM: staging buffer -> word -> memory, a byte per two cycles
        m.d.comb += [srp.addr.eq(ci), srp.en.eq(S["C_RD"]),
                     mem.addr.eq(waddr), mem.wdata.eq(word[W - 8 * V:]),
                     mem.en.eq(S["C_WR"] | S["TX_FETCH"] & kmem), mem.we.eq(S["C_WR"])]
        with m.If(S["C_SH"]):
            m.d.sync += ci.eq(ci + 1)
        with m.If(S["C_WR"] | S["TX_FETCH"]):
            m.d.sync += waddr.eq(waddr + 1)
        S.go("C_RD", "C_SH")
        S.go("C_SH", "C_WR", ci[:sv] == V - 1)
        S.go("C_SH", "C_RD", ci[:sv] != V - 1)
        S.go("C_WR", "C_NX")
        S.go("C_NX", "TX_HDR", ci_done)
        S.go("C_NX", "C_RD", ~ci_done)

        # -- LOAD_SG / RUN: CSR writes PROG_BASE, WEIGHT_BASE, CTRL.START (each on the port the
        # cycle after its state), then STATUS until not busy
        caddr = Signal(4)
        cwe = Signal()
        cwdata = Signal(32)
        crd = Signal(32)
        m.d.comb += [csr.addr.eq(caddr), csr.we.eq(cwe), csr.wdata.eq(cwdata)]
        m.d.sync += [cwe.eq(S.any("R_PROG", "R_WB", "R_START")), crd.eq(csr.rdata)]
        with m.If(S["R_PROG"]):
            m.d.sync += [caddr.eq(2), cwdata.eq(args[0:32])]
        with m.If(S["R_WB"]):
            m.d.sync += [caddr.eq(3), cwdata.eq(args[32:64]), self.running.eq(1)]
        with m.If(S["R_START"]):
            m.d.sync += [caddr.eq(0), cwdata.eq(1)]
        with m.If(S["R_W0"]):
            m.d.sync += caddr.eq(1)
        with m.If(S["R_WAIT"] & ~crd[0]):
            m.d.sync += self.running.eq(0)
        for a, b in (("R_PROG", "R_WB"), ("R_WB", "R_START"), ("R_START", "R_W0"),
                     ("R_W0", "R_W1"), ("R_W1", "R_W2"), ("R_W2", "R_WAIT")):
            S.go(a, b)
        S.go("R_WAIT", "TX_HDR", ~crd[0])
        crd_st = Signal()                   # crd holds STATUS
        m.d.sync += crd_st.eq(caddr == 1)
        with m.If(crd_st):
            m.d.sync += self.error.eq(crd[8:16] != 0)

        # -- reply: header, payload (words of V bytes from memory, or 4-byte CSRs / constants),
        # CRC; a byte per load
        rm1 = Signal(PB)
        rlen0 = Signal()
        m.d.sync += [rm1.eq(rlen - 1), pay_end.eq(pi == rm1), rlen0.eq(rlen == 0)]
        S.go("TX_HDR", "TX_CRC", load & (ri == 4) & rlen0)
        S.go("TX_HDR", "TX_FETCH", load & (ri == 4) & ~rlen0)
        with m.If(load & ~(S["TX_PAY"] & ~pay_end)):      # ri stays 5 during the payload
            m.d.sync += ri.eq(ri + 1)
        with m.If(S["TX_HDR"] & load & (ri == 4) & rlen0):
            m.d.sync += ri.eq(6)
        with m.If(S["TX_HDR"]):
            m.d.sync += pi.eq(0)
        # the word: the memory's read_latency cycles after TX_FETCH; or a CSR (caddr set in
        # TX_FETCH from t_addr, read into crd) or a constant, two cycles after.  wix: the word,
        # t_*: its CSR address / constant, registered from wix (which changes in TX_LAT only)
        wix = Signal(4)
        t_addr = Signal(4)
        t_const = Signal()
        t_hi = Signal()
        with m.If(S["TX_HDR"]):
            m.d.sync += wix.eq(0)
        with m.If(S["TX_LAT"]):
            m.d.sync += wix.eq(wix + 1)
        m.d.sync += [t_const.eq((kind == K_STATUS) & wix[1]), t_hi.eq(wix[0])]
        with m.Switch(kind):
            for k, tab in tables.items():
                with m.Case(k):
                    with m.Switch(wix):
                        for wi, a in enumerate(tab):
                            if a is not None:
                                with m.Case(wi):
                                    m.d.sync += t_addr.eq(a)
        with m.If(S["TX_FETCH"]):
            m.d.sync += caddr.eq(t_addr)
        waits = ["TX_FETCH", *(f"TX_W{w}" for w in range(1, nlat)), "TX_LAT"]
        for a, b in zip(waits, waits[1:]):
            S.go(a, b)
        S.go("TX_LAT", "TX_PAY")
        with m.If(S[waits[L]] & kmem):
            m.d.sync += word[:8 * V].eq(mem.rdata)
        with m.If(S["TX_LAT"] & ~kmem):
            m.d.sync += word[:32].eq(Mux(t_const, Mux(t_hi, consts[1], consts[0]), crd))
        with m.If(S["C_SH"] | S["TX_PAY"] & load):
            m.d.sync += word.eq(Cat(word[8:], srp.data))
        with m.If(S["TX_PAY"] & load):
            m.d.sync += pi.eq(pi + 1)
        wend = Mux(kmem, pi[:sv] == V - 1, pi[:2] == 3)
        S.go("TX_PAY", "TX_CRC", load & pay_end)
        S.go("TX_PAY", "TX_FETCH", load & ~pay_end & wend)
        S.go("TX_CRC", "HUNT", load & ri[0])
        S.build()
        return m

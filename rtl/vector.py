"""The vector unit: POOL (max / average), ADD (requantized element-wise sum), MUL (per-channel
vector broadcast over pixels) and LUT (table lookup), V lanes."""
from types import SimpleNamespace

from amaranth.hdl import Const, Module, Signal, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import LUT_BYTES, Op

from .bus import (BUFFER_ATTRS, DUP, CmdSignature, DataSignature, INSTR_BITS, driving_register,
                  fanout_copies, instr_fields, stable_copy, timing_regs)
from .dsp import ecp5_dsp_regs, registered_product
from .postproc import PostprocSignature
from .window import WindowSignature

__all__ = ["VectorUnit"]


def _chain(m, branches):
    """If/Elif/.../Else over ``(test, body)``: the last branch is the default (its test unused)."""
    if len(branches) == 1:
        branches[0][1]()
        return
    for k, (test, body) in enumerate(branches):
        ctx = m.If(test) if k == 0 else (m.Else() if k == len(branches) - 1 else m.Elif(test))
        with ctx:
            body()


class VectorUnit(wiring.Component):
    """POOL reads one word per cycle over each window (c outer, valid positions only) and sends
    max (mult 1, shift 0) or sum (the instruction's mult/shift) to the post-processor; ADD reads
    ``a`` and ``b`` on alternating cycles and sends ``a*mult_a + b*mult_b`` (mult 1); MUL likewise
    reads ``a[p*c_w + c]`` and ``b[c]`` and sends ``a*b`` with the instruction's mult/shift.  LUT
    first reads the 256-byte table from DRAM (``rd_cmd``/``rd_data``, counted by ``inc_w_rd``) into
    V copies (one per lane, 256/V words of V bytes), then maps one word per cycle (V lookups) and
    sends the bytes through the post-processor unchanged (mult 1, shift 0, no clamp).  ``done``
    pulses once the last beat has been handed to the post-processor."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        V = cfg.pe_cols
        super().__init__({
            "start": In(1), "instr": In(INSTR_BITS), "done": Out(1),
            "buf_raddr": Out(16), "buf_ren": Out(1), "buf_rdata": In(8 * V),
            "pp": Out(PostprocSignature(lanes=V)),
            "rd_cmd": Out(CmdSignature()), "rd_data": In(DataSignature(width=8 * V)),
            "win": Out(WindowSignature()),
            "inc_w_rd": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        V = cfg.pe_cols
        # the operations built in (AccelConfig.op_*); the unit is only started with one of them
        PMAX, PAVG, ADD, MUL, LUT = cfg.op_maxpool, cfg.op_avgpool, cfg.op_add, cfg.op_mul, cfg.op_lut
        POOL, AM = PMAX or PAVG, ADD or MUL
        # the opcode decode registered (the instruction is stable from two cycles before ``start``)
        regs = timing_regs(platform)
        opc = self.instr[:8]
        # (named like the lanes' copies below: yosys would merge each into one of them, beside
        # one lane and far from the unit's own logic)
        is_pool = stable_copy(m, opc == Op.POOL, regs, f"is_pool{DUP}") if POOL else Const(0)
        is_mul = stable_copy(m, opc == Op.MUL, regs, f"is_mul{DUP}") if MUL else Const(0)
        is_lut = stable_copy(m, opc == Op.LUT, regs, f"is_lut{DUP}") if LUT else Const(0)
        # each lane's share of the beat select (hundreds of mux LUTs per decode) from its own
        # copy of the decode, with the timing registers
        def lane_sel(on, op, name):
            return fanout_copies(m, opc == op, V, name) if on and regs else None
        lane_pool = lane_sel(POOL, Op.POOL, "is_pool_l")
        lane_mul = lane_sel(MUL, Op.MUL, "is_mul_l")
        lane_lut = lane_sel(LUT, Op.LUT, "is_lut_l")
        fp = instr_fields(self.instr, Op.POOL)
        fa = instr_fields(self.instr, Op.ADD)
        fm = instr_fields(self.instr, Op.MUL)
        fl = instr_fields(self.instr, Op.LUT)
        avg = fp["mode"] if PMAX and PAVG else Const(int(PAVG))   # POOL: 1 = average
        win = self.win
        lane = lambda v, j: v[8 * j:8 * j + 8].as_signed()
        wait = Signal(3)
        fsm_states = []         # (state name, opcode test, sync statements on start)
        beats = []              # (opcode test, lane tests, valid, tag, lo, hi, [(acc, mult, shift) per lane])

        # ---------------- POOL
        if POOL:
            m.d.comb += [
                win.in_h.eq(fp["in_h"]), win.in_w.eq(fp["in_w"]), win.out_h.eq(fp["out_h"]),
                win.out_w.eq(fp["out_w"]), win.kh.eq(fp["kh"]), win.kw.eq(fp["kw"]), win.sh.eq(fp["sh"]),
                win.sw.eq(fp["sw"]), win.pad_top.eq(fp["pad_top"]), win.pad_left.eq(fp["pad_left"]),
                win.n_cc.eq(fp["c_w"]), win.n_c.eq(1), win.stride.eq(fp["c_w"]),
                win.ioff.eq(fp["in_addr"]), win.obase0.eq(fp["out_addr"]), win.ostride.eq(1),
            ]
            prun = Signal()
            m.d.comb += win.advance.eq(prun & win.valid)
            # step (cycle 0) -> the read word registered (1, deep_pipeline) -> accumulate -> beat
            en1, first1, last1, inpad1 = Signal(), Signal(), Signal(), Signal()
            en2, first2, last2, inpad2 = Signal(), Signal(), Signal(), Signal()
            tag1, tag2, ptag3 = Signal(16, reset_less=regs), Signal(16, reset_less=regs), Signal(16, reset_less=regs)
            prd = Signal(8 * V, reset_less=regs)
            pv3 = Signal()
            m.d.sync += [en1.eq(win.advance), first1.eq(win.first), last1.eq(win.last),
                         inpad1.eq(win.inpad), tag1.eq(win.obase)]
            if cfg.deep_pipeline:
                m.d.sync += [en2.eq(en1), first2.eq(first1), last2.eq(last1), inpad2.eq(inpad1), tag2.eq(tag1),
                             pv3.eq(en2 & last2), ptag3.eq(tag2)]
                with m.If(en1):
                    m.d.sync += prd.eq(self.buf_rdata)
            else:   # accumulate in cycle 1, straight from the buffer's output
                m.d.comb += [en2.eq(en1), first2.eq(first1), last2.eq(last1), inpad2.eq(inpad1),
                             tag2.eq(tag1), prd.eq(self.buf_rdata)]
                m.d.sync += [pv3.eq(en2 & last2), ptag3.eq(tag2)]
            # |sum| <= 255*255*128 < 2**23 (kh, kw are 8-bit): 24 bits are exact; a max is 8 bits
            pacc = [Signal(signed(24 if PAVG else 8), name=f"pacc{j}", reset_less=regs) for j in range(V)]
            # the accumulate controls, one copy per lane with the deep pipeline's timing registers
            # (each drives a lane's 24-bit adder and mux); ``avg`` is an instruction field,
            # stable from before ``start``
            if cfg.deep_pipeline and regs:
                # (with max pooling the enables are the flags below instead)
                en_l = fanout_copies(m, en1, V, "pen") if not PMAX else [None] * V
                # (the data-side controls matter only with an enable: no reset)
                # (max pooling alone: the first-step flag only in the flags below)
                first_l = (fanout_copies(m, first1, V, "pfirst", reset_less=True) if PAVG
                           else [None] * V)
                inpad_l = fanout_copies(m, inpad1, V, "pinpad", reset_less=True)
                avg_l = fanout_copies(m, avg, V, "pavg", reset_less=True) if PMAX and PAVG else [avg] * V
            else:
                en_l, first_l, inpad_l, avg_l = [en2] * V, [first2] * V, [inpad2] * V, [avg] * V
            # (deep form with the timing registers: the max compare decides only the enable of a
            # lane's accumulator, from two flags per lane registered beside the controls' copies
            # -- ``pall``: it loads whatever the compare says (first step, or average pooling),
            # ``pcmp``: it loads ``a`` if ``a`` is the larger -- one LUT after the compare)
            split = cfg.deep_pipeline and regs and PMAX
            if split:
                pall = fanout_copies(m, en1 & (first1 | avg), V, "pall")
                pcmp = fanout_copies(m, en1 & ~first1 & inpad1 & ~avg, V, "pcmp")
            for j in range(V):
                a = lane(prd, j)
                # (max pooling keeps int8 values: with the timing registers an 8-bit compare)
                pm = pacc[j][:8].as_signed() if regs else pacc[j]
                sm = Mux(first_l[j], 0, pacc[j]) + Mux(inpad_l[j], a, 0) if PAVG else None
                if split:
                    with m.If(pall[j]):
                        first_v = Mux(inpad_l[j], a, -128)
                        m.d.sync += pacc[j].eq(Mux(avg_l[j], sm, first_v) if PAVG else first_v)
                    with m.Elif(pcmp[j] & (a > pm)):
                        m.d.sync += pacc[j].eq(a)
                    continue
                mx = Mux(first_l[j], Mux(inpad_l[j], a, -128), Mux(inpad_l[j] & (a > pm), a, pacc[j]))
                with m.If(en_l[j]):
                    m.d.sync += pacc[j].eq(Mux(avg_l[j], sm, mx) if PMAX and PAVG else (sm if PAVG else mx))
            beats.append((is_pool, lane_pool, pv3, ptag3, fp["clamp_lo"], fp["clamp_hi"],
                          [(pacc[j], Mux(avg, fp["mult"], 1), Mux(avg, fp["shift"], 0)) for j in range(V)]))

        # ---------------- ADD / MUL (a, b read on alternating cycles)
        # ADD: word i of n_words; MUL: word i = p*c_w + c, b word c, until p == n_pix
        i = Signal(20)          # ADD/MUL word counter, also LUT's (never both at once)
        ph = Signal()
        # read addresses kept beside the counters (cycle-neutral): a_ptr = a_addr + i (LUT: in_addr + i),
        # b_ptr = b_addr + (MUL: cc, ADD: i)
        a_ptr, b_ptr = Signal(16), Signal(16)
        # with the timing registers the read address itself is a register (raddr, kept as the
        # address of the next read: b_ptr after an ``a`` read, a_ptr + 1 after a ``b`` or LUT read)
        raddr = Signal(16)
        if AM:
            arun = Signal()
            cc = Signal(10)
            pp_ = Signal(20)
            aen1, aph1 = Signal(), Signal()
            atag1 = Signal(16)
            xv = Signal()
            # ADD: |a*mult_a + b*mult_b| < 2**24, MUL: int16: 25 bits per lane are exact
            xr = [Signal(signed(25), name=f"xr{j}", reset_less=regs) for j in range(V)]
            xtag = Signal(16, reset_less=regs)
            aend = Signal()
            cw_last = stable_copy(m, (fm["c_w"] - 1)[:10], regs, "cw_last")   # c_w - 1
            npix_last = stable_copy(m, (fm["n_pix"] - 1)[:20], regs, "npix_last")
            nw_last = stable_copy(m, (fa["n_words"] - 1)[:20], regs, "nw_last", reset_less=True)
            # aend is a register: the counters only move on a ``b`` read, so the ``a`` read before
            # it decides (into pre_end, wrap) whether that step ends the run / wraps c
            pre_end, wrap = Signal(), Signal()

            def sel(mul, add):
                return Mux(is_mul, mul, add) if ADD and MUL else (add if ADD else mul)
            aissue = arun & ~aend
            m.d.sync += [aen1.eq(aissue), aph1.eq(ph), atag1.eq(fa["out_addr"] + i)]
            with m.If(aissue):
                m.d.sync += ph.eq(~ph)
                with m.If(~ph):
                    m.d.sync += [wrap.eq(cc == cw_last), raddr.eq(b_ptr),
                                 pre_end.eq(sel((cc == cw_last) & (pp_ == npix_last), i == nw_last))]
                with m.If(ph):
                    m.d.sync += [i.eq(i + 1), a_ptr.eq(a_ptr + 1), b_ptr.eq(b_ptr + 1), raddr.eq(a_ptr + 1),
                                 aend.eq(pre_end)]
                    if MUL:
                        with m.If(wrap):
                            m.d.sync += [cc.eq(0), pp_.eq(pp_ + 1)]
                            with m.If(is_mul):
                                m.d.sync += b_ptr.eq(fm["b_addr"])
                        with m.Else():
                            m.d.sync += cc.eq(cc + 1)
            # the read word is registered before the multiplier, the product after it (timing: the
            # activation buffer's output, the multiplier and the adder each get a cycle):
            # read (aen1) -> multiply (aen2) -> add (aen3) -> beat
            # deep_pipeline: the product in two stages (the multiplier's operands registered, then
            # its output: a DSP's own input and output registers on ECP5), one more cycle
            aen2, aph2 = Signal(), Signal()
            atag2 = Signal(16, reset_less=regs)
            rd2 = Signal(8 * V, reset_less=regs)
            m.d.sync += [aen2.eq(aen1), aph2.eq(aph1), atag2.eq(atag1), rd2.eq(self.buf_rdata)]
            aen3, aph3, atag3 = aen2, aph2, atag2
            for k in range(1 + int(cfg.deep_pipeline)):       # -> the product's cycle
                en_, ph_, tg_ = Signal(name=f"aen{3 + k}"), Signal(name=f"aph{3 + k}"), \
                    Signal(16, name=f"atag{3 + k}", reset_less=regs)
                m.d.sync += [en_.eq(aen3), ph_.eq(aph3), tg_.eq(atag3)]
                prev_en, prev_ph = aen3, aph3
                aen3, aph3, atag3 = en_, ph_, tg_
            if cfg.deep_pipeline and regs:
                # the product's cycle: each lane's areg and xr loads from its own copy of the
                # stage's two enables (one LUT of aen/aph had routed to every lane's enable pins)
                lane_aload = fanout_copies(m, prev_en & ~prev_ph, V, "aload")
                lane_xload = fanout_copies(m, prev_en & prev_ph, V, "xload")
            else:
                lane_aload, lane_xload = [aen3 & ~aph3] * V, [aen3 & aph3] * V
            in_dsp = cfg.deep_pipeline and ecp5_dsp_regs(platform)
            m.d.sync += xv.eq(aen3 & aph3)
            # one 8 x 16 multiplier per lane, shared by the two phases: the a word (phase 0) gives
            # a*mult_a (ADD; MUL keeps a itself, ``ma``); the b word (phase 1) gives b*mult_b, added
            # (ADD), or b*(a mod 2**16) whose low 16 bits are the exact int16 product a*b (MUL)
            # with the timing registers the operand y is a register, loaded a cycle ahead (an
            # ``a`` word is always followed by its ``b`` word: y for the b word is the a word
            # read this cycle, MUL)
            areg = [Signal(signed(25), name=f"areg{j}", reset_less=regs) for j in range(V)]
            for j in range(V):
                y = Signal(16, name=f"vmy{j}", reset_less=regs)
                prod = Signal(signed(25), name=f"vmp{j}", reset_less=regs)
                # (each lane's MUL test from its own copy of the decode with the timing registers:
                # yosys merges ``is_mul`` with one lane's copy, which then drove every lane)
                mul_j = lane_mul[j] if lane_mul else is_mul
                if regs:
                    a_now = lane(rd2, j)            # the a word (sign-extended to 16 bits)
                    if ADD and MUL:
                        y_next = Mux(aph1, Mux(mul_j, a_now, fa["mult_b"]), fa["mult_a"])
                    elif ADD:
                        y_next = Mux(aph1, fa["mult_b"], fa["mult_a"])
                    else:
                        y_next = Mux(aph1, a_now, 1)
                    m.d.sync += y.eq(y_next)
                else:
                    ma = Signal(16, name=f"ma{j}", reset_less=regs)      # the a word, MUL
                    if MUL:
                        with m.If(aen2 & ~aph2):
                            m.d.sync += ma.eq(lane(rd2, j))         # sign-extended to 16 bits
                    if ADD and MUL:
                        m.d.comb += y.eq(Mux(aph2, Mux(is_mul, ma, fa["mult_b"]), fa["mult_a"]))
                    elif ADD:
                        m.d.comb += y.eq(Mux(aph2, fa["mult_b"], fa["mult_a"]))
                    else:
                        m.d.comb += y.eq(Mux(aph2, ma, 1))
                if in_dsp:
                    m.d.comb += prod.eq(registered_product(m, f"vmul{j}", lane(rd2, j), y, 25,
                                                           signed_b=False))
                elif cfg.deep_pipeline:
                    a_r = Signal(signed(8), name=f"vma{j}", reset_less=True)
                    y_r = Signal(16, name=f"vmy_r{j}", reset_less=True)
                    m.d.sync += [a_r.eq(lane(rd2, j)), y_r.eq(y), prod.eq(a_r * y_r)]
                else:
                    with m.If(aen2):
                        m.d.sync += prod.eq(lane(rd2, j) * y)
                with m.If(lane_aload[j]):
                    m.d.sync += areg[j].eq(prod)
                with m.If(lane_xload[j]):
                    if ADD and MUL:
                        m.d.sync += xr[j].eq(Mux(mul_j, prod[:16].as_signed(), areg[j] + prod))
                    else:
                        m.d.sync += xr[j].eq(areg[j] + prod if ADD else prod[:16].as_signed())
            with m.If(aen3 & aph3):
                m.d.sync += xtag.eq(atag3)
            if MUL:
                beats.append((is_mul, lane_mul, xv, xtag, fm["clamp_lo"], fm["clamp_hi"],
                              [(xr[j], fm["mult"], fm["shift"]) for j in range(V)]))
            if ADD:
                add_beat = (None, None, xv, xtag, fa["clamp_lo"], fa["clamp_hi"],
                            [(xr[j], 1, fa["shift"]) for j in range(V)])

        # ---------------- LUT
        if LUT:
            LW = LUT_BYTES // V                  # table words of V bytes
            lb = (V - 1).bit_length()            # log2 V
            tk = Signal(range(LW + 1))           # table words received
            lrun = Signal()
            li = i                               # the ADD/MUL word counter (never both at once)
            len1, len2 = Signal(), Signal()
            ltag1, ltag2 = Signal(16, reset_less=regs), Signal(16, reset_less=regs)
            lsel2 = Signal(lb * V, reset_less=regs)
            # deep_pipeline: the read word registered before it addresses the tables (one more
            # cycle per LUT instruction; else block RAM output -> table address in one cycle)
            if cfg.deep_pipeline:
                # (named as a fan-out copy with the timing registers: yosys would merge it with
                # rd2, the multipliers' operand register, which also loads the read word every
                # cycle, and place the one register between the tables and the DSPs)
                lin = Signal(8 * V, reset_less=regs, name=f"lin{DUP}" if regs else "lin")
                m.d.sync += lin.eq(self.buf_rdata)
            else:
                lin = self.buf_rdata
            tab_r = []
            # rd_data.ready (LDATA): with the timing registers a flip-flop set as the table's read
            # command is accepted, cleared with its last word
            l_rdy = Signal()
            if regs:
                m.d.comb += self.rd_data.ready.eq(l_rdy)
            t_we = is_lut & self.rd_data.valid & self.rd_data.ready
            if regs:
                # the tables' write port registered, an enable and address copy per table (the
                # last word lands a cycle after LDATA; LUT reads the tables two cycles later at
                # the earliest: buffer word, then ``lin``)
                t_data = Signal(8 * V, name="tw_data_r", reset_less=True)
                m.d.sync += t_data.eq(self.rd_data.data)
                t_en = fanout_copies(m, t_we, V, "tw_en")
                t_addr = fanout_copies(m, tk, V, "tw_addr", reset_less=True)
            else:
                t_data, t_en, t_addr = self.rd_data.data, [t_we] * V, [tk] * V
            for j in range(V):
                mem = Memory(shape=8 * V, depth=LW, init=[], attrs=BUFFER_ATTRS)
                m.submodules[f"lut{j}"] = mem
                wp = mem.write_port()
                rp = mem.read_port()
                m.d.comb += [wp.addr.eq(t_addr[j]), wp.data.eq(t_data), wp.en.eq(t_en[j]),
                             rp.addr.eq(lin[8 * j + lb:8 * j + 8]), rp.en.eq(is_lut)]
                tab_r.append(rp)
            lend = Signal()             # li == n_words, kept as a flag
            lw_last = stable_copy(m, (fl["n_words"] - 1)[:20], regs, "lw_last", reset_less=True)
            lissue = lrun & ~lend
            len0, ltag0 = Signal(), Signal(16)
            m.d.sync += [len0.eq(lissue), ltag0.eq(fl["out_addr"] + li)]
            if cfg.deep_pipeline:
                m.d.sync += [len1.eq(len0), ltag1.eq(ltag0)]
            else:
                m.d.comb += [len1.eq(len0), ltag1.eq(ltag0)]
            m.d.sync += [len2.eq(len1), ltag2.eq(ltag1)]
            for j in range(V):
                m.d.sync += lsel2[lb * j:lb * (j + 1)].eq(lin[8 * j:8 * j + lb])
            with m.If(lissue):
                m.d.sync += [li.eq(li + 1), a_ptr.eq(a_ptr + 1), raddr.eq(a_ptr + 1), lend.eq(li == lw_last)]
            lbytes = [tab_r[j].data.word_select(lsel2[lb * j:lb * (j + 1)], 8).as_signed() for j in range(V)]
            if cfg.deep_pipeline:
                # each lane's table byte registered before the beat's select (one more cycle)
                len3, ltag3 = Signal(), Signal(16, reset_less=regs)
                lbr = [Signal(signed(8), name=f"lbyte{j}", reset_less=regs) for j in range(V)]
                m.d.sync += [len3.eq(len2), ltag3.eq(ltag2), *(r.eq(b) for r, b in zip(lbr, lbytes))]
                len2, ltag2, lbytes = len3, ltag3, lbr
            beats.append((is_lut, lane_lut, len2, ltag2, -128, 127, [(b, 1, 0) for b in lbytes]))

        if ADD:
            beats.append(add_beat)      # last: the default, as the FSM's
        # ---------------- shared read port and post-processor beat
        addr = a_ptr                                                       # LUT in_addr == a_addr
        if AM:
            addr = Mux(ph & ~is_lut, b_ptr, addr)
        if regs and (AM or LUT):
            addr = raddr
        if POOL:
            addr = Mux(is_pool, win.addr, addr) if (AM or LUT) else win.addr
        m.d.comb += [self.buf_ren.eq(1), self.buf_raddr.eq(addr), self.pp.bias.eq(0)]
        # deep_pipeline: the beat registered at the unit's output (one more cycle per
        # instruction, FLUSH waits it out): the lanes' selects of pool sums, table bytes and
        # ADD/MUL results end at registers by the unit, and the post-processor's input registers
        # take them across the die
        fields = ("valid", "tag", "lo", "hi", "acc", "mult", "shift")
        if cfg.deep_pipeline:
            bt = SimpleNamespace(**{n: Signal.like(getattr(self.pp, n), name=f"beat_{n}",
                                                   reset_less=n != "valid") for n in fields})
            # (with the timing registers only ``valid`` has a reset: the beat's data matter
            # under it)
            for n in fields:
                dst = getattr(self.pp, n)
                if regs and n != "valid":
                    dst = driving_register(m, dst, f"beat_{n}_r")
                m.d.sync += dst.eq(getattr(bt, n))
        else:
            bt = self.pp

        def beat(valid, tag, lo, hi, lanes=()):
            m.d.comb += [bt.valid.eq(valid), bt.tag.eq(tag), bt.lo.eq(lo), bt.hi.eq(hi)]
            for j, lane_values in enumerate(lanes):
                lane_beat(j, *lane_values)

        def lane_beat(j, acc, mult, shift):
            m.d.comb += [bt.acc[32 * j:32 * j + 32].eq(acc),
                         bt.mult[16 * j:16 * j + 16].eq(mult),
                         bt.shift[6 * j:6 * j + 6].eq(shift)]
        if regs:        # the lanes' selects from their own decode copies
            _chain(m, [(test, lambda r=rest: beat(*r[:4])) for test, _, *rest in beats])
            for j in range(V):
                _chain(m, [(lt[j] if lt else None, lambda r=rest, j=j: lane_beat(j, *r[4][j]))
                           for _, lt, *rest in beats])
        else:           # one select for the whole beat
            _chain(m, [(test, lambda r=rest: beat(*r)) for test, _, *rest in beats])

        with m.FSM():
            with m.State("IDLE"):
                def go_pool():
                    m.d.comb += win.start.eq(1)
                    if regs:        # (POOL as a flag of its own: it gates the window's steps)
                        m.d.sync += prun.eq(1)
                    m.next = "POOL"

                def go_lut():
                    m.d.sync += [tk.eq(0), li.eq(0), a_ptr.eq(fl["in_addr"]), raddr.eq(fl["in_addr"]),
                                 lend.eq(fl["n_words"] == 0)]
                    m.next = "LCMD"

                def go_add():
                    m.d.sync += [i.eq(0), ph.eq(0), cc.eq(0), pp_.eq(0), a_ptr.eq(fa["a_addr"]),
                                 aend.eq(sel((fm["n_pix"] == 0) | (fm["c_w"] == 0), fa["n_words"] == 0)),
                                 b_ptr.eq(fa["b_addr"]), raddr.eq(fa["a_addr"])]
                    m.next = "ADD"
                with m.If(self.start):
                    _chain(m, [(is_pool, go_pool)] * POOL + [(is_lut, go_lut)] * LUT + [(None, go_add)] * AM)
            if POOL:
                with m.State("POOL"):
                    if not regs:
                        m.d.comb += prun.eq(1)
                    with m.If(win.advance & win.final):
                        m.d.sync += wait.eq(4 + 2 * int(cfg.deep_pipeline))
                        if regs:
                            m.d.sync += prun.eq(0)
                        m.next = "FLUSH"
            if AM:
                with m.State("ADD"):
                    m.d.comb += arun.eq(1)
                    with m.If(aend):
                        m.d.sync += wait.eq(4 + 2 * int(cfg.deep_pipeline))
                        m.next = "FLUSH"
            if LUT:
                with m.State("LCMD"):
                    m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.addr.eq(fl["lut_addr"][:cfg.dram_addr_bits]),
                                 self.rd_cmd.len.eq(LW)]
                    with m.If(self.rd_cmd.ready):
                        m.d.sync += [l_rdy.eq(1)] if regs else []
                        m.next = "LDATA"
                with m.State("LDATA"):
                    if not regs:
                        m.d.comb += self.rd_data.ready.eq(1)
                    with m.If(self.rd_data.valid):
                        m.d.comb += self.inc_w_rd.eq(1)
                        m.d.sync += tk.eq(tk + 1)
                        with m.If(tk == LW - 1):
                            m.d.sync += [l_rdy.eq(0)] if regs else []
                            m.next = "LUT"
                with m.State("LUT"):
                    m.d.comb += lrun.eq(1)
                    with m.If(lend):
                        m.d.sync += wait.eq(5 + 3 * int(cfg.deep_pipeline))
                        m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 0):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m

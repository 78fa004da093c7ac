"""CONV weight fetch, the Persistent Buffer (PB), its residency table, LOADSG and SETRES: tile ids
-> DRAM bursts or PB copies into the double-buffered weight and record buffers."""
from types import SimpleNamespace

from amaranth.hdl import Module, Signal, Mux, Const, Cat
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sushi.config import AccelConfig
from sushi.isa import Op, PARAM_BYTES

from .bus import (BUFFER_ATTRS, DUP, CmdSignature, DataSignature, INSTR_BITS, driving_register,
                  fanout_copies, instr_fields, stable_copy, timing_regs)

__all__ = ["WeightFetch"]


def _pb_bits(cfg: AccelConfig) -> int:
    return max(1, (max(1, cfg.pb_tiles) - 1).bit_length())


class WeightFetch(wiring.Component):
    """Fetches every group of a CONV into alternating halves of the weight buffer; executes LOADSG
    and SETRES.

    Per group: its tile ids (dense ``tile_base + g*tile_sg + ky*tile_sky + kx*tile_skx + c``;
    depthwise ``tile_base + g*tile_sg + i``, i < ceil(kh*kw/R)) in (ky, kx, c) order; a *row* is
    one (g, ky, kx) (depthwise: one g), counted from 0 over the instruction.  With ``pb_on`` and a
    valid residency entry ``pb_key = (rows, c_res, slot)`` a tile of row ``ri < rows`` and column
    ``c < c_res`` is a **hit**, copied from PB slot ``slot + ri*c_res + c`` (one tile per cycle, no
    DRAM traffic); consecutive **misses** are merged into one DRAM burst (a hit ends the burst);
    then its requantization records.  Tile ``t`` of a group lands in entry ``half*wbuf_tiles + t``
    of R memories of V bytes (beat r of a tile -> memory r), so ``w_rdata`` is a whole tile per
    cycle, the cycle after ``w_raddr`` (two cycles with ``deep_pipeline``).  Records land in a
    memory of 64V-bit words (the V records of one output word), entry ``half*RW + q``.
    ``full[h]`` is set when half h holds a complete group; the consumer frees it with ``release``
    (half ``release_half``).

    The Persistent Buffer is ``pb_tiles`` tiles organised like the weight buffer (R memories of V
    bytes).  LOADSG (the sequencer has already checked its range) copies tiles ``tile_lo ..`` from
    DRAM into slots ``pb_slot ..``; SETRES writes residency entry ``key`` (a memory of
    ``res_entries`` words plus a valid bit per entry, which reset clears; ``rows*c_res == 0``
    invalidates).  ``done`` pulses at the end of either.  The PB keeps its contents across START."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        R, V = cfg.pe_rows, cfg.pe_cols
        super().__init__({
            "start": In(1), "instr": In(INSTR_BITS), "weight_base": In(32), "done": Out(1),
            "pb_on": In(1), "pb_key": In(8),
            "rd_cmd": Out(CmdSignature()), "rd_data": In(DataSignature(width=8 * V)),
            "full": Out(2), "release": In(1), "release_half": In(1),
            "w_raddr": In(range(2 * cfg.wbuf_tiles)), "w_rdata": Out(8 * V * R),
            "p_raddr": In(range(2 * (R // V))), "p_rdata": Out(64 * V),
            "inc_w_rd": Out(1), "inc_pb_miss": Out(1), "inc_pb_hit": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        R, V, WT, PBT = cfg.pe_rows, cfg.pe_cols, cfg.wbuf_tiles, cfg.pb_tiles
        RW = R // V
        T = R * V
        A, TB = cfg.dram_addr_bits, cfg.tile_id_bits      # DRAM byte addresses, tile ids
        wbase = Signal(A)
        m.d.comb += wbase.eq(self.weight_base)
        SB = _pb_bits(cfg)

        regs = timing_regs(platform)

        def staged(wp, name):
            """The write port's inputs, registered on the way with the timing registers (the
            register sits by its block RAM; DRAM data cross the die to it): the write lands a cycle
            later, before anything reads the word (a buffer half is marked full, a LOADSG done,
            cycles after its last write)."""
            if not regs:
                return wp
            st = SimpleNamespace(**{f: Signal.like(getattr(wp, f), name=f"{name}_{f}")
                                    for f in ("addr", "data", "en")})
            # no reset on any of them: a write in the cycle after a reset lands in a buffer
            # whose contents are undefined after a reset anyway (the full flags are reset); the
            # address named as a fan-out copy: the PB rows' addresses are equal, and yosys would
            # merge them into one register, far from most of the rows
            m.d.sync += [driving_register(m, wp.addr, f"{name}_addr{DUP}").eq(st.addr),
                         driving_register(m, wp.data, f"{name}_data_r").eq(st.data),
                         driving_register(m, wp.en, f"{name}_en_r").eq(st.en)]
            return st

        # weight buffer; with deep_pipeline its read address registered, a copy per row beside
        # the row's block RAMs (the tile comes two cycles after the address: rtl.conv.latency)
        wport = []
        w_ra = (fanout_copies(m, self.w_raddr, R, "w_raddr", reset_less=True) if cfg.deep_pipeline
                else [self.w_raddr] * R)
        for r in range(R):
            mem = Memory(shape=8 * V, depth=2 * WT, init=[], attrs=BUFFER_ATTRS)
            m.submodules[f"wmem{r}"] = mem
            rp = mem.read_port()
            wp = mem.write_port()
            m.d.comb += [rp.addr.eq(w_ra[r]), self.w_rdata[8 * V * r:8 * V * (r + 1)].eq(rp.data)]
            wport.append(staged(wp, f"wst{r}"))
        # the parameter records' write port: one DRAM beat (8 * V bits) into one of its 8 lanes
        # (the half is marked full with its last beat, the CONV engine reads its records cycles
        # later)
        if regs:
            # one memory per lane, each with its own registered copy of the write address (one
            # address register driving the 128 LUT RAMs of all eight lanes was a 12 ns route);
            # the registered beat is shared (a bit drives one LUT RAM per lane)
            pwp = SimpleNamespace(addr=Signal(range(2 * RW), name="pst_addr"),
                                  data=Signal(8 * V, name="pst_data"), en=Signal(8, name="pst_en"))
            p_data = Signal(8 * V, name="pst_data_r", reset_less=True)
            p_en = Signal(8, name="pst_en_r")
            p_addr = fanout_copies(m, pwp.addr, 8, "pst_addr", reset_less=True)
            m.d.sync += [p_data.eq(pwp.data), p_en.eq(pwp.en)]
            # one record word per buffer half (R == V): the read address is the CONV engine's
            # buffer half, which changes only between groups, many cycles before the next group's
            # first record read, so each lane reads through its own registered copy of it (one
            # register driving the 128 LUT RAMs of all lanes was an 11 ns route)
            p_raddr = (fanout_copies(m, self.p_raddr, 8, "prd_addr", reset_less=True) if RW == 1
                       else [self.p_raddr] * 8)
            lanes = []
            for k in range(8):
                mem = Memory(shape=8 * V, depth=2 * RW, init=[], attrs=BUFFER_ATTRS)
                m.submodules[f"pmem{k}"] = mem
                rp, wp = mem.read_port(), mem.write_port()
                m.d.comb += [rp.addr.eq(p_raddr[k]), wp.addr.eq(p_addr[k]), wp.data.eq(p_data),
                             wp.en.eq(p_en[k])]
                lanes.append(rp.data)
            m.d.comb += self.p_rdata.eq(Cat(*lanes))
        else:
            pmem = Memory(shape=64 * V, depth=2 * RW, init=[], attrs=BUFFER_ATTRS)
            m.submodules.pmem = pmem
            prp = pmem.read_port()
            pwp = pmem.write_port(granularity=8 * V)
            m.d.comb += [prp.addr.eq(self.p_raddr), self.p_rdata.eq(prp.data)]

        f = instr_fields(self.instr, Op.CONV)
        fs = instr_fields(self.instr, Op.LOADSG)
        fr = instr_fields(self.instr, Op.SETRES)
        # (registered decodes with the timing registers: the instruction is stable before start)
        is_sg = stable_copy(m, self.instr[:8] == Op.LOADSG, regs, "is_sg")
        is_sr = stable_copy(m, self.instr[:8] == Op.SETRES, regs, "is_sr")

        # Persistent Buffer and residency table (none when pb_tiles == 0)
        pb_r, pb_w = [], []
        ri = Signal(16)                     # row index of the tile being generated
        pbrow = Signal(SB)                  # entry.slot + ri * entry.c_res
        e_rows, e_cres, e_slot, e_ok = Signal(16), Signal(16), Signal(SB), Signal()
        res_set = Signal()
        pb_slot = Signal(SB)
        if PBT:
            NE = cfg.res_entries
            tmem = Memory(shape=32 + SB, depth=NE, init=[], attrs=BUFFER_ATTRS)
            m.submodules.restab = tmem
            trp = tmem.read_port()
            twp = tmem.write_port()
            valid = Signal(NE)
            key = self.pb_key[:max(1, (NE - 1).bit_length())] if NE > 1 else Const(0, 1)
            m.d.comb += [trp.addr.eq(key), e_rows.eq(trp.data[:16]), e_cres.eq(trp.data[16:32]),
                         e_slot.eq(trp.data[32:]),
                         # key < NE: sequencer's check; registered with the timing registers (the
                         # key, the switch and the table change in instructions before the CONV)
                         e_ok.eq(stable_copy(m, stable_copy(m, self.pb_on, regs, "pb_on_r")
                                             & valid.bit_select(stable_copy(m, key, regs, "key_r"), 1),
                                             regs, "e_ok_r"))]
            fkey = fr["key"][:len(key)] if NE > 1 else Const(0, 1)
            m.d.comb += [twp.addr.eq(fkey), twp.data.eq(Cat(fr["rows"], fr["c_res"], fr["pb_slot"][:SB])),
                         twp.en.eq(res_set)]
            with m.If(res_set):
                m.d.sync += valid.bit_select(fkey, 1).eq((fr["rows"] != 0) & (fr["c_res"] != 0))
            for r in range(R):
                mem = Memory(shape=8 * V, depth=PBT, init=[], attrs=BUFFER_ATTRS)
                m.submodules[f"pbmem{r}"] = mem
                pb_r.append(mem.read_port())
                pb_w.append(staged(mem.write_port(), f"pbst{r}"))
                if not regs:
                    m.d.comb += pb_r[r].addr.eq(pb_slot)

        # loop bounds from the instruction, registered every cycle in two steps (kh*kw, then the
        # bounds): the instruction is stable from the cycle before ``start`` (two with
        # deep_pipeline), so they are ready by GEN, two cycles after ``start`` at the earliest;
        # no multiplier or mux of instruction fields on the GEN cycle's paths
        dw = f["dw"]
        # (the instruction's loop bounds, reloaded every cycle: no reset with the timing registers)
        khkw = Signal(16, reset_less=regs)
        nt = Signal(16)
        m.d.sync += khkw.eq(f["kh"] * f["kw"])
        if R & (R - 1) == 0:
            m.d.comb += nt.eq((khkw + R - 1) >> (R.bit_length() - 1))
        else:
            m.d.comb += nt.eq((khkw + R - 1) // R)
        # loop bounds - 1 (ky, kx, c)
        la1, lb1, lc1 = (Signal(8, reset_less=regs), Signal(8, reset_less=regs),
                         Signal(16, name="lc1", reset_less=regs))
        m.d.sync += [la1.eq(Mux(dw, 1, f["kh"]) - 1), lb1.eq(Mux(dw, 1, f["kw"]) - 1),
                     lc1.eq(Mux(dw, nt, f["cin_w"]) - 1)]
        rec_beats1 = Signal(8, reset_less=regs)
        rec_stride = Signal(16, reset_less=regs)
        m.d.sync += [rec_beats1.eq(Mux(dw, 8, 8 * R // V) - 1),
                     rec_stride.eq(Mux(dw, V * PARAM_BYTES, R * PARAM_BYTES))]

        g = Signal(10)
        g_end = Signal()        # g == n_groups, a flag set beside g
        h = Signal()
        gbase, rowb, colb = Signal(TB), Signal(TB), Signal(TB, name="colb")     # (named: see kx)
        ky, kx = Signal(8), Signal(8, name="kx")      # (named: the closure below hides it from the tracer)
        c = Signal(16)
        gen_done = Signal()
        run_start = Signal(TB)
        run_len = Signal(16)
        max_run = 65535 // R
        tloc = Signal(range(WT + 1))
        row = Signal(range(R))
        beats = Signal(16)
        paddr = Signal(A)
        pk = Signal(8)
        # PB -> weight buffer copy (the write lands the cycle after the hit was taken)
        cp_v = Signal()
        cp_take = Signal()      # (timing registers) a hit is taken: per-row copies of cp_v below
        cp_dst = Signal(range(2 * WT))
        if not regs:
            m.d.sync += cp_v.eq(0)
        # LOADSG
        sg_rem = Signal(range(max(2, PBT + 1)))     # n_tiles <= pb_tiles (checked by the sequencer)
        sg_daddr = Signal(A)
        sg_slot = Signal(SB)
        sg_chunk = Signal(16)
        m.d.comb += sg_chunk.eq(Mux(sg_rem > max_run, max_run, sg_rem))

        with m.If(self.release):
            m.d.sync += self.full.bit_select(self.release_half, 1).eq(0)

        # GEN's decisions come from flags kept one step ahead (the next tile id ``cur``, whether it
        # continues the current DRAM run ``same``, the loop-end, run and residency compares): each is
        # computed beside the update that changes its inputs, not after it
        # (with the timing registers; on small FPGAs the same values as compares, fewer cells, but
        # ``cur`` and ``same`` registers there too)
        cur = Signal(TB)
        if regs:
            c_last, kx_last, ky_last = Signal(), Signal(), Signal()
            run_any, run_full = Signal(), Signal()
            row_hit, col_hit = Signal(), Signal()
        else:
            c_last, kx_last, ky_last = c == lc1, kx == lb1, ky == la1
            run_any, run_full = run_len != 0, run_len == max_run
            row_hit, col_hit = e_ok & (ri < e_rows), c < e_cres

        # same: cur == run_start + run_len (the tile to take continues the DRAM run); after a
        # missed tile is taken the run ends at cur + 1 and the next cur is cur + 1 (c steps), colb + tile_skx
        # (kx steps, c was lc1) or rowb + tile_sky (ky steps, kx was lb1, c lc1): as cur = colb + c
        # and colb = rowb + kx*tile_skx, those two are contiguous iff tile_skx == lc1 + 1 and
        # tile_sky == lb1*tile_skx + lc1 + 1, per-instruction constants (registered in three
        # steps; the instruction is stable from three cycles before ``start``, GEN comes two after)
        # (registered forms) the bounds - 2
        la2, lb2, lc2 = Signal(8, reset_less=regs), Signal(8, reset_less=regs), Signal(16, reset_less=regs)
        rec_beats2 = Signal(8)
        if regs:
            m.d.sync += [la2.eq(la1 - 1), lb2.eq(lb1 - 1), lc2.eq(lc1 - 1), rec_beats2.eq(rec_beats1 - 1)]
            pk_last = Signal()      # pk == rec_beats1, a flag
            same = Signal()
            kx_contig, ky_contig = Signal(), Signal()
            skx_lb1 = Signal(TB, reset_less=True)
            m.d.sync += [skx_lb1.eq(lb1 * f["tile_skx"]),
                         kx_contig.eq(f["tile_skx"][:TB] == (lc1 + 1)[:TB]),
                         ky_contig.eq(f["tile_sky"][:TB] == (skx_lb1 + lc1 + 1)[:TB])]
        else:
            pk_last = pk == rec_beats1
            same = Signal()         # set as a missed tile is taken: the next cur == cur + 1

        def upd(*stmts):        # updates of the registered forms
            return list(stmts) if regs else []
        hit = Signal()
        m.d.comb += hit.eq(row_hit & col_hit)
        # GEN ends a DRAM run (-> ISSUE) when run_any & (hit | ~same | run_full); with the timing
        # registers that decision is a flag too, computed from the flags' next values as a tile
        # is taken (the only GEN step that changes them) and cleared on the way into GEN (the
        # run is empty then): GEN's step decision (the enable of ~200 registers) is a LUT of
        # three flip-flops, not of six through three levels
        if regs:
            stop = Signal()
        else:
            stop = run_any & (hit | ~same | run_full)
        # the PB read address pbrow + c: with the timing registers a register per PB row (each by
        # its block RAMs), stepped beside c and pbrow, not an adder in front of all of them
        slots = ([Signal(SB, name=f"pbslot{DUP}{r}", reset_less=True) for r in range(R)]
                 if regs and PBT else [])

        def slot_upd(v):
            return [s.eq(v) for s in slots]
        if slots:
            for r in range(R):
                m.d.comb += pb_r[r].addr.eq(slots[r])
        else:
            m.d.comb += pb_slot.eq(pbrow + c)
        daddr = Signal(A)
        m.d.comb += daddr.eq(wbase + run_start * T)
        # rd_data.ready: 1 in the data states (DATA, PDATA, SG_DATA); with the timing registers
        # from a flip-flop set as a read command is accepted (each issue state goes to its data
        # state) and cleared with the command's last beat, not decoded from the state
        rdy = Signal()

        def data_state(into: bool):
            return [rdy.eq(into)] if regs else []

        def ready_here():
            if not regs:
                m.d.comb += self.rd_data.ready.eq(1)
        if regs:
            m.d.comb += self.rd_data.ready.eq(rdy)
            # the staged write ports' address and data whatever the state (only the enables
            # follow it): no state decode on the selects of their 8 * V + 1 bits per row
            for r in range(R):
                m.d.comb += [wport[r].addr.eq(Mux(h, WT, 0) + tloc), wport[r].data.eq(self.rd_data.data)]
            for r in range(len(pb_w)):
                m.d.comb += [pb_w[r].addr.eq(sg_slot), pb_w[r].data.eq(self.rd_data.data)]

        # with the timing registers GEN's take decision (state GEN, not gen_done, not stop) is a
        # flag of its own, set on the way into GEN and from the flags' next values as a tile is
        # taken: the enables of the ~100 registers a take steps start at one flip-flop
        take_en = Signal()

        def take_tile():
            """GEN takes this tile: a hit is copied from the PB now, a miss joins the DRAM run."""
            m.d.comb += [self.inc_pb_miss.eq(~hit), self.inc_pb_hit.eq(hit)]
            with m.If(hit):
                if regs:
                    m.d.comb += cp_take.eq(1)
                m.d.sync += [*([] if regs else [cp_v.eq(1)]), cp_dst.eq(Mux(h, WT, 0) + tloc),
                             tloc.eq(tloc + 1)]
            with m.Else():
                with m.If(~run_any):
                    m.d.sync += run_start.eq(cur)
                m.d.sync += [run_len.eq(run_len + 1),
                             *upd(run_any.eq(1), run_full.eq(run_len + 1 == max_run))]
                if regs:
                    m.d.sync += same.eq(~c_last | Mux(~kx_last, kx_contig, ~ky_last & ky_contig))
                else:       # (the next cur compared with cur + 1 directly, no multiplier)
                    nxt1 = (cur + 1)[:TB]
                    m.d.sync += same.eq(~c_last | Mux(~kx_last, (colb + f["tile_skx"])[:TB] == nxt1,
                                                      ~ky_last & ((rowb + f["tile_sky"])[:TB] == nxt1)))
            ri_n = Mux(ri == 0xFFFF, ri, ri + 1)                               # saturates
            if regs:    # stop from the flags' next values (as assigned here)
                col_hit_n = Mux(~c_last, c + 1 < e_cres, e_cres != 0)
                row_hit_n = Mux(~c_last, row_hit, e_ok & (ri_n < e_rows))
                same_n = Mux(hit, same, ~c_last | Mux(~kx_last, kx_contig, ~ky_last & ky_contig))
                full_n = Mux(hit, run_full, run_len + 1 == max_run)
                stop_n = (run_any | ~hit) & ((row_hit_n & col_hit_n) | ~same_n | full_n)
                m.d.sync += [stop.eq(stop_n), take_en.eq(~stop_n)]
            with m.If(~c_last):
                m.d.sync += [c.eq(c + 1), cur.eq(cur + 1), *upd(c_last.eq(c == lc2),
                                                col_hit.eq(c + 1 < e_cres))]
                m.d.sync += slot_upd(slots[0] + 1 if slots else 0)
            with m.Else():
                m.d.sync += slot_upd(pbrow + e_cres)
                m.d.sync += [c.eq(0), ri.eq(ri_n), pbrow.eq(pbrow + e_cres),
                             *upd(c_last.eq(lc1 == 0), col_hit.eq(e_cres != 0),
                                  row_hit.eq(e_ok & (ri_n < e_rows)))]
                with m.If(~kx_last):
                    m.d.sync += [kx.eq(kx + 1), colb.eq(colb + f["tile_skx"]),
                                 cur.eq(colb + f["tile_skx"]), *upd(kx_last.eq(kx == lb2))]
                with m.Else():
                    m.d.sync += [kx.eq(0), *upd(kx_last.eq(lb1 == 0))]
                    with m.If(~ky_last):
                        m.d.sync += [ky.eq(ky + 1), rowb.eq(rowb + f["tile_sky"]),
                                     colb.eq(rowb + f["tile_sky"]),
                                     cur.eq(rowb + f["tile_sky"]), *upd(ky_last.eq(ky == la2))]
                    with m.Else():
                        m.d.sync += [gen_done.eq(1), *([take_en.eq(0)] if regs else [])]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start & is_sr):
                    m.next = "SR"
                with m.Elif(self.start & is_sg):
                    m.d.sync += [sg_rem.eq(fs["n_tiles"]), sg_slot.eq(fs["pb_slot"]), row.eq(0),
                                 sg_daddr.eq(wbase + fs["tile_lo"] * T)]
                    m.next = "SG_ISSUE"
                with m.Elif(self.start):
                    m.d.sync += [g.eq(0), g_end.eq(f["n_groups"] == 0), h.eq(0), gbase.eq(f["tile_base"]),
                                 paddr.eq(f["param_addr"]),
                                 self.full.eq(0), ri.eq(0), pbrow.eq(e_slot),
                                 *upd(row_hit.eq(e_ok & (e_rows != 0)))]
                    m.next = "GROUP"
            with m.State("GROUP"):
                # GEN's start values: with the timing registers loaded on every GROUP cycle
                # (nothing reads them there), so the group decision below (g_end, the half's
                # full flag) is not on the enables of these ~100 flip-flops
                gen_init = slot_upd(pbrow) + [
                    ky.eq(0), kx.eq(0), c.eq(0), rowb.eq(gbase), colb.eq(gbase),
                    run_len.eq(0), gen_done.eq(0), tloc.eq(0), row.eq(0),
                    cur.eq(gbase), *upd(run_any.eq(0), run_full.eq(0), stop.eq(0),
                                        c_last.eq(lc1 == 0), kx_last.eq(lb1 == 0),
                                        ky_last.eq(la1 == 0), col_hit.eq(e_cres != 0))]
                if regs:
                    m.d.sync += gen_init
                with m.If(g_end):
                    m.next = "IDLE"
                with m.Elif(~self.full.bit_select(h, 1)):
                    m.d.sync += [take_en.eq(1)] if regs else gen_init
                    m.next = "GEN"
            with m.State("GEN"):
                with m.If(gen_done):
                    with m.If(run_any):
                        m.next = "ISSUE"
                    with m.Else():
                        m.next = "PCMD"
                with m.Elif(stop):
                    m.next = "ISSUE"
                with m.Else():
                    if not regs:
                        take_tile()
            with m.State("ISSUE"):
                m.d.comb += [self.rd_cmd.valid.eq(1),
                             self.rd_cmd.addr.eq(daddr),
                             self.rd_cmd.len.eq(run_len * R)]
                with m.If(self.rd_cmd.ready):
                    m.d.sync += [beats.eq(run_len * R), *data_state(True)]
                    m.next = "DATA"
            with m.State("DATA"):
                ready_here()
                for r in range(R):
                    if not regs:
                        m.d.comb += [wport[r].addr.eq(Mux(h, WT, 0) + tloc), wport[r].data.eq(self.rd_data.data)]
                    m.d.comb += wport[r].en.eq(self.rd_data.valid & (row == r))
                with m.If(self.rd_data.valid):
                    m.d.comb += self.inc_w_rd.eq(1)
                    m.d.sync += beats.eq(beats - 1)
                    with m.If(row == R - 1):
                        m.d.sync += [row.eq(0), tloc.eq(tloc + 1)]
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                    with m.If(beats == 1):
                        m.d.sync += [run_len.eq(0), *upd(run_any.eq(0), run_full.eq(0), stop.eq(0)),
                                     *data_state(False)]
                        with m.If(gen_done):
                            m.next = "PCMD"
                        with m.Else():
                            m.d.sync += [take_en.eq(1)] if regs else []
                            m.next = "GEN"
            with m.State("PCMD"):
                m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.addr.eq(paddr),
                             self.rd_cmd.len.eq(rec_beats1 + 1)]
                with m.If(self.rd_cmd.ready):
                    m.d.sync += [pk.eq(0), *upd(pk_last.eq(rec_beats1 == 0)), *data_state(True)]
                    m.next = "PDATA"
            with m.State("PDATA"):
                ready_here()
                m.d.comb += [pwp.addr.eq(Mux(h, RW, 0) + (pk >> 3)),
                             pwp.data.eq(Cat(*([self.rd_data.data] * (len(pwp.data) // (8 * V)))))]
                with m.If(self.rd_data.valid):
                    m.d.comb += [self.inc_w_rd.eq(1), pwp.en.eq(Const(1, 8) << pk[:3])]
                    m.d.sync += [pk.eq(pk + 1), *upd(pk_last.eq(pk == rec_beats2))]
                    with m.If(pk_last):
                        m.d.sync += [self.full.bit_select(h, 1).eq(1), h.eq(~h), g.eq(g + 1),
                                     g_end.eq(g + 1 == f["n_groups"]),
                                     gbase.eq(gbase + f["tile_sg"]), paddr.eq(paddr + rec_stride),
                                     *data_state(False)]
                        m.next = "GROUP"
            # ---------------- LOADSG: DRAM -> PB slots, then the residency entry
            with m.State("SG_ISSUE"):
                with m.If(sg_rem == 0):
                    m.next = "SG_SET"
                with m.Else():
                    m.d.comb += [self.rd_cmd.valid.eq(1), self.rd_cmd.addr.eq(sg_daddr),
                                 self.rd_cmd.len.eq(sg_chunk * R)]
                    with m.If(self.rd_cmd.ready):
                        m.d.sync += [beats.eq(sg_chunk * R), sg_rem.eq(sg_rem - sg_chunk),
                                     sg_daddr.eq(sg_daddr + sg_chunk * T), *data_state(True)]
                        m.next = "SG_DATA"
            with m.State("SG_DATA"):
                ready_here()
                for r in range(len(pb_w)):
                    if not regs:
                        m.d.comb += [pb_w[r].addr.eq(sg_slot), pb_w[r].data.eq(self.rd_data.data)]
                    m.d.comb += pb_w[r].en.eq(self.rd_data.valid & (row == r))
                with m.If(self.rd_data.valid):
                    m.d.comb += self.inc_w_rd.eq(1)
                    m.d.sync += beats.eq(beats - 1)
                    with m.If(row == R - 1):
                        m.d.sync += [row.eq(0), sg_slot.eq(sg_slot + 1)]
                    with m.Else():
                        m.d.sync += row.eq(row + 1)
                    with m.If(beats == 1):
                        m.d.sync += data_state(False)
                        m.next = "SG_ISSUE"
            with m.State("SG_SET"):
                m.d.comb += self.done.eq(1)
                m.next = "IDLE"
            # ---------------- SETRES: one residency entry
            with m.State("SR"):
                m.d.comb += [res_set.eq(1), self.done.eq(1)]
                m.next = "IDLE"
        if regs:
            with m.If(take_en):
                take_tile()

        # the PB copy write (never in the same cycle as a DRAM beat: DATA follows GEN via ISSUE)
        # (with the timing registers from a copy of cp_v per row: each selects 8 * V + 1 bits)
        if PBT and regs:
            # (no reset: the power-on reset lasts 15 cycles and each copy reloads every cycle;
            # a write after a shorter reset lands in a weight buffer half that is not full)
            for r, v in enumerate(fanout_copies(m, cp_take, R, "cp_v", reset_less=True)):
                with m.If(v):
                    m.d.comb += [wport[r].addr.eq(cp_dst), wport[r].data.eq(pb_r[r].data),
                                 wport[r].en.eq(1)]
        elif PBT:
            with m.If(cp_v):
                for r in range(R):
                    m.d.comb += [wport[r].addr.eq(cp_dst), wport[r].data.eq(pb_r[r].data),
                                 wport[r].en.eq(1)]
        return m

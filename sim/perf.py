"""Performance model of SushiAccel: cycles, DRAM traffic and on-chip traffic per instruction,
without running the RTL.

The model is a per-instruction *timeline* of the RTL as written (rtl/*.py, docs/perf_model.md):
every DRAM command the accelerator issues is replayed against a model of ``sim.dram_model.DramModel``
(fixed read latency, one command outstanding, a bandwidth credit counter shared by reads and
writes), and the finite-state machines of the sequencer, DMA, weight fetcher, CONV engine and
vector unit are reduced to closed-form cycle counts between those commands.  Nothing here is a
free parameter: every constant below is a state count read from the RTL and marked with the
state(s) it comes from.  Calibration against the RTL's CYCLES counter (docs/perf_model.md: 973
programs on tiny, 8x8, 16x8 and 8x8-pb, five DRAM timings, with and without resident SubGraphs) found no
constant that needed fitting: the worst error is 0 cycles, and the predicted traffic counters equal
the RTL's.  tests/test_perf_model.py keeps checking it.

Entry points:

* :func:`program_cycles(trace, cfg, timing)` - predicted cycles of an executed instruction trace
  (``GoldenModel``'s ``Counters.trace``), the name ``sushi.verify`` uses;
* :func:`predict(instrs, cfg, timing, resident, layers)` - cycles plus DRAM / on-chip bytes and MACs,
  per instruction and per layer (the manifest's ``layers[*].instrs`` ranges), for a program and a
  Persistent Buffer residency state; :func:`latency_table` builds L[SubNet][SubGraph] from it;
* :func:`instr_cycles(ins, cfg, timing)` - one instruction in isolation (credits full, nothing resident).

``DramTiming(latency, bandwidth)`` mirrors ``RtlSim(cfg, latency=..., bandwidth=...)``: ``latency``
in cycles from an accepted read command to its first data beat, ``bandwidth`` in DRAM bytes per
cycle (``None`` = one read and one write beat of V bytes per cycle).  The older
``beats_per_cycle`` spelling is accepted: ``bandwidth = beats_per_cycle * V``.  The default latency
is RtlSim's (20), so ``DramTiming()`` predicts ``RtlSim(cfg)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from sushi import isa
from sushi.config import AccelConfig
from sushi.isa import Op

from rtl.conv import latency as conv_latency      # a step's issue to res_valid (the PE array's pipeline)
from rtl.postproc import latency as pp_latency     # the post-processor pipeline (beat in -> out)

__all__ = ["DramTiming", "instr_cycles", "program_cycles", "predict", "latency_table", "Residency",
           "decode_program"]

#: longest LOAD/STORE DRAM command in beats (rtl/dma.py MAX_BURST)
DMA_MAX_BURST = 4096


@dataclass(frozen=True)
class DramTiming:
    """DRAM timing, the parameters of ``RtlSim`` / ``DramModel``.

    latency: cycles from a read command accepted (valid & ready in cycle t) to its first data beat
        (valid in cycle t + latency); ``DramModel`` needs >= 3.
    bandwidth: DRAM bytes per cycle shared by reads and writes, ``None`` = unlimited (one read and
        one write beat per cycle).  Values >= 2*V behave like ``None`` (as in ``DramModel``).
    beats_per_cycle: legacy spelling; if given (and bandwidth is None) bandwidth = beats * V, where
        1.0 means unlimited.
    """
    latency: int = 20
    bandwidth: "float | int | Fraction | None" = None
    beats_per_cycle: "float | None" = None

    def bytes_per_cycle(self, V: int):
        """Bandwidth as an exact Fraction (the DramModel's ``limit_denominator(4096)``) or None."""
        bw = self.bandwidth
        if bw is None and self.beats_per_cycle is not None and self.beats_per_cycle < 1:
            bw = self.beats_per_cycle * V
        if bw is None:
            return None
        bw = Fraction(bw).limit_denominator(1 << 12)
        if bw <= 0:
            raise ValueError(f"bandwidth must be positive, not {bw}")
        return None if bw >= 2 * V else bw


class _Dram:
    """The DramModel's timing: one command at a time (every initiator waits for its data), first
    read beat ``latency`` cycles after the command, then one beat per cycle as long as the credit
    counter (``bandwidth`` bytes gained per cycle, saturating at two beats, V bytes per beat,
    shared by reads and writes) allows."""

    def __init__(self, V: int, t: DramTiming):
        self.V = V
        self.L = int(t.latency)
        bw = t.bytes_per_cycle(V)
        self.unlimited = bw is None
        if not self.unlimited:
            self.num, den = bw.numerator, bw.denominator
            self.cost = V * den
            self.cap = 2 * self.cost
            self.cred = self.cap          # DramModel resets the counter full
            self.tc = 0                   # cycle at which self.cred is the counter value

    def _advance(self, c: int):
        if c > self.tc:
            self.cred = min(self.cap, self.cred + (c - self.tc) * self.num)
            self.tc = c

    def _beats(self, first: int, n: int) -> int:
        """n beats granted from cycle ``first`` on; returns the cycle of the last grant.

        Closed form of the DramModel's credit counter (cost V per beat, gain ``bandwidth`` per
        cycle, cap two beats): with gain >= cost one beat per cycle; otherwise the cap cannot bind
        once the burst has started, so beat j is granted at
        first + max(j, ceil(((j+1)*cost - c0) / gain))."""
        if n <= 0:
            return first - 1
        if self.unlimited:
            return first + n - 1
        self._advance(first)
        c0, num, cost = self.cred, self.num, self.cost
        if num >= cost:
            last = first + n - 1
            self.cred = min(self.cap, c0 + n * (num - cost))
        else:
            last = first + max(n - 1, -(-(n * cost - c0) // num))
            self.cred = min(self.cap, c0 + num * (last + 1 - first) - cost * n)
        self.tc = last + 1
        return last

    def read(self, t_cmd: int, n: int) -> int:
        """A read command of n beats accepted in cycle t_cmd -> cycle the consumer holds the last
        beat (it is valid then; the consumer's FSM moves on the cycle after)."""
        # DramModel: the command is popped at t+L-2, the engine reads memory from t+L-1 (one beat
        # granted per cycle), the data is valid one cycle after its grant
        return self._beats(t_cmd + self.L - 1, n) + 1

    def write(self, first: int, n: int) -> int:
        """n write beats offered from cycle ``first`` on -> cycle of the last handshake."""
        return self._beats(first, n)


class Residency:
    """Persistent Buffer residency: the residency table (``res_entries`` entries
    ``(rows, c_res, slot)`` or None, as ``GoldenModel.res_table``), the PBKEY of the running
    program, plus an optional static set of resident tile ids (a what-if: any tile in the set is a
    hit, whatever the key).  SETRES / PBKEY instructions in a predicted program update it as the
    hardware does."""

    def __init__(self, cfg: AccelConfig, resident=None):
        self.cfg = cfg
        self.table = [None] * max(1, cfg.res_entries)
        self.ids = frozenset()
        self.key = None
        if resident is None:
            return
        if isinstance(resident, Residency):
            self.table, self.ids = list(resident.table), resident.ids
            return
        if isinstance(resident, dict):           # {key: (rows, c_res, slot)}
            for k, e in resident.items():
                self.table[int(k)] = tuple(e) if e and e[0] and e[1] else None
            return
        resident = list(resident)
        if resident and all(e is None or (isinstance(e, (tuple, list)) and len(e) == 3) for e in resident):
            for i, e in enumerate(resident[:len(self.table)]):
                self.table[i] = tuple(e) if e and e[0] and e[1] else None
        else:
            self.ids = frozenset(int(i) for i in resident)

    def entry(self):
        """(rows, c_res) of the current PBKEY's entry, or None."""
        e = self.table[self.key] if self.key is not None and self.key < len(self.table) else None
        return (e[0], e[1]) if e else None

    def setres(self, ins):
        if ins.key < len(self.table):
            self.table[ins.key] = (ins.rows, ins.c_res, ins.pb_slot) if ins.rows and ins.c_res else None

    def pbkey(self, ins):
        self.key = ins.key if ins.on else None

    def empty(self) -> bool:
        return not self.ids and not any(self.table)

    def n_resident(self) -> int:
        return sum(e[0] * e[1] for e in self.table if e) + len(self.ids)


@dataclass
class InstrStats:
    op: str
    cycles: int = 0
    w_rd_bytes: int = 0          # DRAM: weight tiles + requant records + LUT tables + LOADSG tiles
    act_rd_bytes: int = 0        # DRAM: LOAD
    act_wr_bytes: int = 0        # DRAM: STORE
    instr_rd_bytes: int = 0      # DRAM: instruction fetch
    pb_hits: int = 0
    pb_misses: int = 0
    pb_rd_bytes: int = 0         # on chip: PB -> weight buffer copies
    pb_wr_bytes: int = 0         # on chip: LOADSG into the PB
    sram_rd_bytes: int = 0       # on chip: activation / weight / record / LUT buffer reads (PB excluded)
    sram_wr_bytes: int = 0       # on chip: the same buffers' writes (PB excluded)
    mac_cycles: int = 0          # PE-array reduction steps (the MAC_CYCLES counter)
    macs: int = 0                # int8 multiply-accumulates performed (padding lanes included)

    def add(self, o: "InstrStats"):
        for k in _NUM_FIELDS:
            setattr(self, k, getattr(self, k) + getattr(o, k))


_NUM_FIELDS = [k for k in InstrStats.__dataclass_fields__ if k != "op"]


class _Machine:
    def __init__(self, cfg: AccelConfig, timing: DramTiming, resident=None):
        self.cfg = cfg
        self.R, self.V = cfg.pe_rows, cfg.pe_cols
        self.RW = self.R // self.V
        self.deep = int(cfg.deep_pipeline)     # the deep_pipeline stages (rtl: extra cycles)
        self.dram = _Dram(self.V, timing)
        self.L = self.dram.L
        self.res = Residency(cfg, resident)
        self.now = 0            # cycle of the next FETCH (the first FETCH is cycle 0)

    # ---- sequencer: FETCH (command) .. RECV (beats) .. DECODE
    def fetch(self) -> int:
        beats = max(1, isa.INSTR_BYTES // self.V)
        last = self.dram.read(self.now, beats)
        # CHECK (and CHECK2 with deep_pipeline), then the DECODE cycle (exec_start)
        return last + 2 + self.deep

    def run(self, ins) -> InstrStats:
        st = InstrStats(op=ins.op.name, instr_rd_bytes=isa.INSTR_BYTES)
        t0 = self.now
        d = self.fetch()
        if ins.op in (Op.HALT, Op.PBKEY):             # the sequencer's own: DECODE -> IDLE / FETCH
            if ins.op == Op.PBKEY:
                self.res.pbkey(ins)
            self.now = d + 1
            st.cycles = self.now - t0
            return st
        self.pp_last = None                           # cycle of the last beat into the post-processor
        x = getattr(self, "_" + ins.op.name.lower())(ins, d, st)   # cycle of the unit's done pulse
        # done (x) -> fin (x+1) = exec_done seen by EXEC -> next FETCH at x+2; exec_done also waits
        # for the post-processor: busy from the cycle after a beat enters until its result is out
        self.now = x + 2
        if self.pp_last is not None:
            self.now = max(self.now, self.pp_last + pp_latency(self.cfg) + 2)
        st.cycles = self.now - t0
        return st

    # ---- DMA (rtl/dma.py): IDLE(d) -> CMD -> LOAD beats / STORE prime + beats -> CMD ... done
    def _load(self, ins, d, st):
        n, V = ins.n_words, self.V
        c = d + 1                                     # CMD
        rem = n
        while rem:
            ch = min(rem, DMA_MAX_BURST)
            c = self.dram.read(c, ch) + 1             # last beat in LOAD -> CMD
            rem -= ch
        st.act_rd_bytes = n * V
        st.sram_wr_bytes = n * V
        return c                                      # CMD with rem == 0: done

    def _store(self, ins, d, st):
        n, V = ins.n_words, self.V
        c = d + 1
        rem = n
        while rem:
            ch = min(rem, DMA_MAX_BURST)
            # CMD (c) accepts the write command; STORE c+1 primes the buffer read; beats from c+2
            c = self.dram.write(c + 2, ch) + 1
            rem -= ch
        st.act_wr_bytes = n * V
        st.sram_rd_bytes = n * V
        return c

    # ---- vector unit (rtl/vector.py)
    def _pool(self, ins, d, st):
        V = self.V
        steps = ins.out_h * ins.out_w * ins.c_w * ins.kh * ins.kw
        # win.start in IDLE (d), first step d+3 (two setup cycles), FLUSH wait 5..0 -> done
        st.sram_rd_bytes = steps * V
        st.sram_wr_bytes = ins.out_h * ins.out_w * ins.c_w * V
        # deep: the read word registered before the max/sum, and the beat at the unit's output
        deep = self.deep
        if steps:           # last step d+2+steps, (its word registered,) accumulated, then the beat
            self.pp_last = d + 4 + 2 * deep + steps
        return d + 3 + steps + 4 + 2 * deep

    def _add(self, ins, d, st):
        n = ins.n_words
        st.sram_rd_bytes, st.sram_wr_bytes = 2 * n * self.V, n * self.V
        # ADD state from d+1, a/b reads on alternating cycles (2n), aend, FLUSH wait 4..0; the
        # last b read at d+2n -> registered, multiplied, added -> beat at d+2n+4 (deep: the
        # product in two stages and the beat registered at the unit's output, two more cycles)
        deep = self.deep
        if n:
            self.pp_last = d + 2 * n + 4 + 2 * deep
        return d + 1 + 2 * n + 5 + 2 * deep

    def _mul(self, ins, d, st):
        n = ins.n_pix * ins.c_w
        st.sram_rd_bytes, st.sram_wr_bytes = 2 * n * self.V, n * self.V
        deep = self.deep
        if n:
            self.pp_last = d + 2 * n + 4 + 2 * deep
        return d + 1 + 2 * n + 5 + 2 * deep

    def _lut(self, ins, d, st):
        V = self.V
        LW = isa.LUT_BYTES // V
        c = self.dram.read(d + 1, LW) + 1            # LCMD at d+1, LDATA ... -> LUT
        n = ins.n_words
        st.w_rd_bytes = isa.LUT_BYTES
        st.sram_wr_bytes = isa.LUT_BYTES * V + n * V  # V lane copies of the table; the results
        st.sram_rd_bytes = n * V + n * V * V          # inputs; one V-byte table word per lane
        # deep: the read word registered before the tables, the table byte registered, the beat
        # at the unit's output
        deep = self.deep
        if n:                                         # lookups c .. c+n-1, table read, beat
            self.pp_last = c + n + 1 + 3 * deep
        return c + n + 6 + 3 * deep                   # n lookups, FLUSH wait 5(+3 deep)..0

    # ---- LOADSG (rtl/weight_fetch.py SG_ISSUE / SG_DATA / SG_SET)
    def _loadsg(self, ins, d, st):
        R, T = self.R, self.cfg.tile_bytes
        max_run = 65535 // R
        c = d + 1                                     # SG_ISSUE
        rem = ins.n_tiles
        while rem:
            ch = min(rem, max_run)
            c = self.dram.read(c, ch * R) + 1
            rem -= ch
        st.w_rd_bytes = ins.n_tiles * T
        st.pb_wr_bytes = ins.n_tiles * T
        return c + 1                                  # SG_SET: done

    def _setres(self, ins, d, st):
        self.res.setres(ins)
        return d + 1                                  # weight fetcher SETRES state: write, done

    # ---- CONV: weight fetcher and CONV engine (rtl/weight_fetch.py, rtl/conv.py)
    def _group_segments(self, ins, g):
        """Tile ids of group g as rows ``[(row index, first id, count)]`` in fetch order (a row is
        one (ky, kx) of a dense group, the whole group when depthwise; its tiles are c = 0..)."""
        b = ins.tile_base + g * ins.tile_sg
        if ins.dw:
            return [(g, b, -(-ins.kh * ins.kw // self.R))]
        K = ins.kh * ins.kw
        return [(g * K + ky * ins.kw + kx, b + ky * ins.tile_sky + kx * ins.tile_skx, ins.cin_w)
                for ky in range(ins.kh) for kx in range(ins.kw)]

    def _fetch_group(self, segs, s, ins, st) -> int:
        """Weight fetch of one group (its rows ``segs``) from its GROUP cycle s -> cycle it is back
        in GROUP with the half full (full[h] visible to the CONV engine)."""
        R, V = self.R, self.V
        max_run = 65535 // R
        c = s + 1                                     # first GEN cycle
        run = 0
        prev = None
        ent = self.res.entry()
        if not self.res.ids:
            # per row: a prefix c < c_res of hits (rows < n_rows), then misses; consecutive miss
            # ids merge into DRAM bursts of at most max_run tiles, a hit ends a burst
            for ri, lo, n in segs:
                if n <= 0:
                    continue
                h = min(n, ent[1]) if ent and min(ri, 0xFFFF) < ent[0] else 0
                if h:
                    if run:                                # this GEN cycle sees the hit: ISSUE
                        c = self.dram.read(c + 1, run * R) + 1
                        run = 0
                    c += h
                    st.pb_hits += h
                    lo, n = lo + h, n - h
                    if not n:
                        continue
                st.pb_misses += n
                if run and lo != prev + 1:
                    c = self.dram.read(c + 1, run * R) + 1   # the GEN cycle that sees the break
                    run = 0
                prev = lo + n - 1
                while n:
                    if run == max_run:                     # a full run: this GEN cycle issues
                        c = self.dram.read(c + 1, run * R) + 1
                        run = 0
                    take = min(n, max_run - run)
                    c += take
                    run += take
                    n -= take
            tiles = ()
        else:
            tiles = ((tid, (ent is not None and min(ri, 0xFFFF) < ent[0] and k < ent[1]) or tid in self.res.ids)
                     for ri, lo, n in segs for k, tid in enumerate(range(lo, lo + n)))
        for tid, hit in tiles:
            if run and (hit or tid != prev + 1 or run == max_run):
                # this GEN cycle detects the end of the run: ISSUE, DATA, back to GEN
                c = self.dram.read(c + 1, run * R) + 1
                run = 0
            c += 1                                    # GEN takes the tile
            if hit:
                st.pb_hits += 1
            else:
                st.pb_misses += 1
                run += 1
                prev = tid
        # the gen_done GEN cycle (c) -> ISSUE the pending run, or PCMD
        if run:
            c = self.dram.read(c + 1, run * R) + 1    # DATA's last beat -> PCMD
        else:
            c += 1                                    # PCMD
        rb = 8 if ins.dw else 8 * R // V              # record beats
        return self.dram.read(c, rb) + 1              # PDATA's last beat -> GROUP, full set

    def _conv(self, ins, d, st):
        R, V, RW = self.R, self.V, self.RW
        G = ins.n_groups
        P = ins.out_h * ins.out_w
        S = ins.kh * ins.kw * (1 if ins.dw else ins.cin_w)      # steps per pixel
        nwords = 1 if ins.dw else RW
        period = max(S, nwords)                                 # drain gap (conv.py 'gap')
        rel = []                                                # release cycle per group
        fe = []                                                 # cycle group g's half is full
        cs = [d + 1]                                            # CE: IDLE -> GSTART

        def engine(k):
            # window valid 3 cycles after GSTART (deep: its first step through the step queue)
            f0 = max(cs[k] + 3 + self.deep, fe[k])
            e = f0 + (P - 1) * period + S - 1                   # the group's final step
            # its last output word into the post-processor: PE array from e+1, res_valid, drain
            self.pp_last = e + 1 + conv_latency(self.cfg) + nwords
            rel.append(e + RW + 4 + conv_latency(self.cfg))     # FLUSH wait RW+3+latency..0: release
            cs.append(rel[-1] + 1)                              # GSTART

        ws = d + 1                                              # WF: IDLE -> GROUP
        groups = [self._group_segments(ins, g) for g in range(G)]
        for g in range(G):
            if g >= 2:
                # the half of group g is free once the engine released group g-2
                while len(rel) <= g - 2:
                    engine(len(rel))
                ws = max(ws, rel[g - 2] + 1)
            fe.append(self._fetch_group(groups[g], ws, ins, st))
            ws = fe[-1]
        while len(rel) < G:
            engine(len(rel))
        # per-step traffic and the MAC counter
        steps = G * P * S
        st.mac_cycles = steps
        st.macs = steps * (V if ins.dw else R * V)
        T = self.cfg.tile_bytes
        nt = st.pb_hits + st.pb_misses
        n_out = G * (V if ins.dw else R)
        st.w_rd_bytes = st.pb_misses * T + n_out * isa.PARAM_BYTES
        st.pb_rd_bytes = st.pb_hits * T
        words_out = G * P * nwords
        st.sram_wr_bytes = nt * T + n_out * isa.PARAM_BYTES + words_out * V
        # per step: one activation word and one whole tile; per output word: V records (8 B each)
        st.sram_rd_bytes = steps * (V + T) + words_out * V * isa.PARAM_BYTES
        return cs[-1]                                           # GSTART with g == n_groups: done


# ---------------------------------------------------------------------------------------- API
def _as_timing(timing) -> DramTiming:
    if timing is None:
        return DramTiming()
    if isinstance(timing, DramTiming):
        return timing
    if isinstance(timing, dict):
        return DramTiming(**timing)
    raise TypeError(f"timing must be a DramTiming or a dict, not {timing!r}")


def decode_program(image: bytes, base: int = 0, max_instrs: int = 1 << 20) -> list:
    """Instructions of the program at ``base`` in ``image`` up to and including HALT (programs
    have no branches, so this is the executed trace)."""
    out = []
    pc = base
    while len(out) < max_instrs:
        ins = isa.decode(bytes(image[pc:pc + isa.INSTR_BYTES]))
        out.append(ins)
        if ins.op == Op.HALT:
            return out
        pc += isa.INSTR_BYTES
    raise ValueError(f"no HALT within {max_instrs} instructions")


def predict(instrs, cfg: AccelConfig, timing=None, resident=None, layers=None) -> dict:
    """Predict one program run.

    instrs: decoded instructions in execution order (``decode_program`` or ``Counters.trace``);
        a trailing HALT is counted when present (a run always ends with one).
    timing: ``DramTiming`` or a dict of its fields.
    resident: the Persistent Buffer state at the start: ``GoldenModel.res_table`` (entries
        ``(rows, c_res, slot)`` / None) or a dict {key: entry}, a set of resident tile ids (what-if),
        a :class:`Residency`, or None.
    layers: the manifest's ``programs[p]["layers"]`` (each with ``instrs = [first, count]`` and a
        ``name``), or None.

    Returns ``{"cycles", "time_us" (at cfg.clock_mhz), "w_rd_bytes", "act_rd_bytes", "act_wr_bytes", "instr_rd_bytes",
    "dram_rd_bytes", "dram_wr_bytes", "pb_hits", "pb_misses", "pb_rd_bytes", "pb_wr_bytes",
    "sram_rd_bytes", "sram_wr_bytes", "mac_cycles", "macs", "instrs": [per instruction],
    "layers": [per layer: the same totals + name, op, first, count]}``.  A layer's cycles are its
    instructions' cycles; instructions outside every layer (HALT) appear only in the totals.
    """
    m = _Machine(cfg, _as_timing(timing), resident)
    per = [m.run(ins) for ins in instrs]
    tot = InstrStats(op="program")
    for s in per:
        tot.add(s)
    out = _totals(tot)
    out["time_us"] = tot.cycles / cfg.clock_mhz
    out["instrs"] = [{"op": s.op, **{k: getattr(s, k) for k in _NUM_FIELDS}} for s in per]
    out["layers"] = []
    for L in layers or []:
        f, n = L["instrs"]
        acc = InstrStats(op=L.get("op", ""))
        for s in per[f:f + n]:
            acc.add(s)
        out["layers"].append({"name": L.get("name", ""), "op": L.get("op", ""), "first": f, "count": n,
                              **_totals(acc)})
    out["residency_after"] = list(m.res.table)
    return out


def _totals(s: InstrStats) -> dict:
    d = {k: getattr(s, k) for k in _NUM_FIELDS}
    d["dram_rd_bytes"] = s.w_rd_bytes + s.act_rd_bytes + s.instr_rd_bytes
    d["dram_wr_bytes"] = s.act_wr_bytes
    return d


def latency_table(programs: dict, cfg: AccelConfig, timing=None, subgraphs: "dict | None" = None,
                  layers: "dict | None" = None) -> dict:
    """L[subnet][subgraph] = predicted cycles of program ``programs[subnet]`` (a list of
    instructions) with ``subgraphs[subgraph]`` resident (a residency table or a set of tile ids;
    ``None`` = nothing resident).  ``subgraphs`` defaults to ``{"none": None}``."""
    subgraphs = subgraphs if subgraphs is not None else {"none": None}
    return {sn: {sg: predict(p, cfg, timing, res, (layers or {}).get(sn))["cycles"]
                 for sg, res in subgraphs.items()}
            for sn, p in programs.items()}


def instr_cycles(ins, cfg: AccelConfig, t: DramTiming = DramTiming(), resident=None) -> int:
    """Cycles of one instruction on its own (fetch included, credits full, PB state ``resident``)."""
    return _Machine(cfg, _as_timing(t), resident).run(ins).cycles


def program_cycles(trace, cfg: AccelConfig, t: DramTiming = DramTiming(), resident=None) -> int:
    """Predicted CYCLES of an executed instruction trace (GoldenModel's ``Counters.trace``)."""
    m = _Machine(cfg, _as_timing(t), resident)
    return sum(m.run(ins).cycles for ins in trace)

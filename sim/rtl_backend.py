"""RTL-in-the-loop serving: every query of a replay runs on the Verilator RTL with a real test image.

The scheduler decides with the latency table's predictions; the RTL measures.  Running a
simulator process per query would be slow, so a replay on the RTL has three phases:

1. the replay runs with a *recording* backend that answers from the cycle-exact performance
   model and records every call (SubGraph loads and queries, in order);
2. the recorded sequence runs on the RTL in ONE simulation (the Persistent Buffer state carries
   from job to job exactly as on the device): each query gets the digits test image
   ``query % N`` quantized for its SubNet; the RTL's cycles, DRAM bytes and output are read back;
3. the replay runs again with a *measured* backend that answers every call with what the RTL
   measured — latency from the RTL's CYCLES counter, off-chip bytes from its DRAM counters, the
   prediction from the RTL's own output bytes, compared with the label.  If the RTL's timing
   differed from the prediction, decisions could differ in phase 3; calls the RTL did not run are
   counted in ``notes["rtl_unmeasured_calls"]`` (0 means every served query was measured on RTL).
"""
from __future__ import annotations

import numpy as np

from sushi import isa
from sushi.isa import Op

__all__ = ["serve_on_rtl"]


class _Recording:
    name = "rtl"

    def __init__(self, table):
        from scheduler.backend import ModelBackend
        self.model = ModelBackend(table)
        self.calls = []

    def run(self, subnet, resident_sg, query=None):
        self.calls.append(("run", subnet, resident_sg, query))
        return self.model.run(subnet, resident_sg, query)

    def load(self, sg):
        self.calls.append(("load", sg))
        return self.model.load(sg)


class _Measured:
    name = "rtl"

    def __init__(self, table, runs: dict, loads: dict):
        from scheduler.backend import ModelBackend
        self.model = ModelBackend(table)
        self.runs, self.loads, self.unmeasured = runs, loads, 0

    def run(self, subnet, resident_sg, query=None):
        key = (subnet, resident_sg, query)
        if key in self.runs:
            return self.runs[key]
        self.unmeasured += 1
        return self.model.run(subnet, resident_sg, query)

    def load(self, sg):
        if sg in self.loads:
            return self.loads[sg]
        self.unmeasured += 1
        return self.model.load(sg)


def _evict_program(cfg) -> bytes:
    """Invalidate every residency entry (one SETRES rows=0 c_res=0 per key), then HALT."""
    return b"".join(isa.encode(Op.SETRES, key=k, rows=0, c_res=0, pb_slot=0)
                    for k in range(cfg.res_entries)) + isa.encode(Op.HALT)


def serve_on_rtl(table, trace, build_dir, policies, queue_cap=None, fallback="drop", period=256,
                 progress=None) -> dict:
    """Replay ``trace`` under each policy with every query on the Verilator RTL; {policy: ReplayResult}."""
    from scheduler.backend import LoadResult, RunResult
    from scheduler.replay import replay
    from models.train import SPLIT_SEED, load_digits_split
    from sim.energy import energy
    from sim.rtl import Job, RtlSim
    from sushi.artifacts import load_build

    say = progress or (lambda m: None)
    b = load_build(build_dir)
    cfg = b.cfg
    base_img, _, wb = b.dram_image()
    evict_base = (len(base_img) + 63) // 64 * 64
    evict = _evict_program(cfg)
    base_img = bytearray(base_img) + bytearray(evict_base - len(base_img)) + evict
    xs, ys = load_digits_split(SPLIT_SEED)["test"]
    to_ms = 1.0 / (cfg.clock_mhz * 1e3)

    recorded = {}
    for p in policies:
        if p == "oracle":
            continue
        rec = _Recording(table)
        replay(table, trace, p, rec, queue_cap=queue_cap, fallback=fallback,
               policy_kw={"period": period} if p == "sushi" else None)
        recorded[p] = rec.calls

    # one RTL run per policy's call sequence (each starts from an empty PB)
    jobs, meta = [], []
    for p, calls in recorded.items():
        for call in [("load", "none")] + calls:
            if call[0] == "load":
                sg = call[1]
                base = evict_base if sg in (None, "none") else int(b.subgraph(sg)["base"])
                jobs.append(Job(dram_image=bytes(base_img), prog_base=base, weight_base=wb, read_back=[]))
                meta.append((p, call))
            else:
                _, subnet, sg, q = call
                img = bytearray(base_img)
                i = (q or 0) % len(xs)
                b.write_input(img, b.quantize_input(xs[i:i + 1], subnet), subnet)
                addr, n = b.output_region(subnet)
                jobs.append(Job(dram_image=bytes(img), prog_base=int(b.program(subnet)["base"]), weight_base=wb,
                                read_back=[(addr, n)]))
                meta.append((p, call))
    say(f"RTL-in-the-loop: {len(jobs)} jobs ({sum(c[0] == 'run' for _, c in meta)} queries) in one Verilator run")
    total = len(base_img)
    res = RtlSim(cfg, dram_bytes=max(1 << 21, 1 << (total - 1).bit_length())).run_jobs(jobs)

    out = {}
    for p in policies:
        if p == "oracle":
            out[p] = replay(table, trace, p)
            continue
        runs, loads, diffs = {}, {}, []
        for (pp, call), r in zip(meta, res):
            if pp != p:
                continue
            if r.counters.get("error") or r.timed_out:
                raise RuntimeError(f"RTL job {call} failed: error {r.counters.get('error')}, timed out {r.timed_out}")
            c = r.counters
            off = c["w_rd_bytes"] + c["act_rd_bytes"] + c["act_wr_bytes"] + c["instr_rd_bytes"]
            e = energy(c)["offchip_uj"]
            if call[0] == "load":
                loads[call[1]] = LoadResult(c["cycles"] * to_ms, int(off), e)
            else:
                _, subnet, sg, q = call
                pred = int(b.decode_output(r.regions[0], subnet).reshape(-1).argmax())
                label = int(ys[(q or 0) % len(xs)])
                runs[(subnet, sg, q)] = RunResult(c["cycles"] * to_ms, int(off), e, pred, label)
                diffs.append(c["cycles"] * to_ms - table.latency[table.column(sg), table.subnet_index(subnet)])
        mb = _Measured(table, runs, loads)
        rr = replay(table, trace, p, mb, queue_cap=queue_cap, fallback=fallback,
                    policy_kw={"period": period} if p == "sushi" else None)
        d = np.abs(np.array(diffs)) if diffs else np.zeros(1)
        rr.notes.update({"rtl_queries": len(runs), "rtl_unmeasured_calls": mb.unmeasured,
                         "rtl_vs_model_max_abs_ms": float(d.max()),
                         "rtl_vs_model_exact_fraction": float((d < 1e-9).mean())})
        out[p] = rr
    return out

"""`sushi verify`: run N inputs through the golden model and the RTL, compare every output byte.

Also compares the dequantized output with onnxruntime's float output on the source model, and the
RTL's counters with the golden model's counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.golden import COUNTER_NAMES, GoldenModel

__all__ = ["verify_build", "compare_outputs", "make_inputs", "VerifyResult"]


@dataclass
class VerifyResult:
    report: dict
    golden_outputs: list = field(default_factory=list, repr=False)
    rtl_outputs: list = field(default_factory=list, repr=False)


def compare_outputs(expected: bytes, got: bytes) -> int:
    """Number of mismatching bytes (a length difference counts every missing byte)."""
    a = np.frombuffer(expected, dtype=np.uint8)
    b = np.frombuffer(got, dtype=np.uint8)
    n = min(a.size, b.size)
    return int((a[:n] != b[:n]).sum()) + abs(a.size - b.size)


def make_inputs(build, n: int, seed: int = 0, program: str = "main") -> np.ndarray:
    """N float inputs in the model's input shape: real digits scans when the model takes 1x1x8x8
    images and scikit-learn is installed, otherwise a fixed-seed normal distribution."""
    shape = tuple(build.program(program)["input"]["shape"])
    if shape[1:] == (1, 8, 8):
        try:
            from sklearn.datasets import load_digits
            d = load_digits().images.astype(np.float32) / 16.0
            rng = np.random.default_rng(seed)
            idx = rng.choice(len(d), size=n, replace=False)
            return ((d[idx] - 0.5) / 0.5)[:, None, :, :]
        except ImportError:
            pass
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape[1:])).astype(np.float32)


def _onnx_path(build, program: str):
    """The float reference of a program: the SubNet's own ONNX in a SuperNet build."""
    sub = build.program(program).get("subnet", {})
    if not sub.get("onnx"):
        return build.onnx_path
    p = Path(sub["onnx"])
    return p if p.is_absolute() else build.dir / p


def _onnx_reference(build, xs: np.ndarray, program: str = "main") -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(str(_onnx_path(build, program)), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: x[None].astype(np.float32)})[0][0] for x in xs])


def verify_build(out_dir, sim: str = "verilator", n_inputs: int = 4, seed: int = 0, program: str = "main",
                 rtl_options: "dict | None" = None, corrupt_byte: "int | None" = None,
                 progress=None, resident: "str | None" = None) -> VerifyResult:
    """Verify a compiled build.  ``program``: a SubNet of a SuperNet build; ``resident``: a SubGraph
    id of its catalog, loaded (its LOADSG program) before the queries, on the golden model and the
    RTL alike, so the queries read those tiles from the Persistent Buffer.  ``corrupt_byte``: flip
    one byte of the first RTL output before the comparison (the test that proves the checker
    catches a corrupted byte)."""
    from sushi.artifacts import load_build
    from sim.perf import DramTiming, predict

    say = progress or (lambda msg: None)
    build = load_build(out_dir)
    cfg = build.cfg
    xs = make_inputs(build, n_inputs, seed, program)
    addr, nbytes = build.output_region(program)

    pb_state = None
    say(f"golden model: {n_inputs} input(s)" + (f", SubGraph {resident} resident" if resident else ""))
    images, golden_out, golden_counts, est = [], [], [], []
    gm = GoldenModel(cfg)            # one model: the Persistent Buffer persists across queries
    pre_jobs, cold = [], None
    if resident is not None:
        sg = build.subgraph(resident)
        img, _, weight_base = build.dram_image(program)
        c = gm.run(img, int(sg["base"]), weight_base)
        if c.error:
            raise RuntimeError(f"loading SubGraph {resident} failed with error code {c.error}")
        pb_state = list(gm.res_table)
        pre_jobs.append((bytes(img), int(sg["base"]), weight_base))
    opts = dict(rtl_options or {})
    timing = DramTiming(**{k: opts[k] for k in ("latency", "bandwidth") if k in opts})
    for x in xs:
        img, prog_base, weight_base = build.dram_image(program)
        build.write_input(img, build.quantize_input(x[None]), program)
        images.append((bytes(img), prog_base, weight_base))
        if resident is not None and cold is None:
            cold = GoldenModel(cfg).run(bytearray(img), prog_base, weight_base)
        c = gm.run(img, prog_base, weight_base)
        if c.error:
            raise RuntimeError(f"golden model stopped with error code {c.error}")
        golden_out.append(bytes(img[addr:addr + nbytes]))
        golden_counts.append(c.as_dict())
        est.append(predict(c.trace, cfg, timing, resident=pb_state)["cycles"])

    rtl_out, rtl_counts, cycles, wall, sim_cycles = golden_out, golden_counts, est, 0.0, 0
    if sim == "verilator":
        from sim.rtl import Job, RtlSim
        say(f"Verilator: building and running {n_inputs} input(s)")
        total = int(build.memory["total_bytes"])
        opts.setdefault("dram_bytes", max(1 << 21, 1 << (total - 1).bit_length()))
        rs = RtlSim(cfg, **{k: v for k, v in opts.items() if k != "waves"})
        jobs = [Job(dram_image=img, prog_base=pb, weight_base=wb, read_back=[]) for img, pb, wb in pre_jobs]
        jobs += [Job(dram_image=img, prog_base=pb, weight_base=wb, read_back=[(addr, nbytes)])
                 for img, pb, wb in images]
        res = rs.run_jobs(jobs)
        for r in res[:len(pre_jobs)]:
            if r.counters.get("error"):
                raise RuntimeError(f"RTL: loading SubGraph {resident} failed with error code {r.counters['error']}")
        res = res[len(pre_jobs):]
        wall = sum(r.wall_s for r in res)   # simulation only: no build, no process start
        rtl_out = [r.regions[0] for r in res]
        rtl_counts = [r.counters for r in res]
        cycles = [r.counters["cycles"] for r in res]
        sim_cycles = sum(cycles)
    elif sim != "golden":
        raise ValueError(f"unknown simulator {sim!r}; choose verilator or golden")

    if corrupt_byte is not None:
        b = bytearray(rtl_out[0])
        b[corrupt_byte % len(b)] ^= 0x5A
        rtl_out = [bytes(b)] + list(rtl_out[1:])

    mismatched = sum(compare_outputs(g, r) for g, r in zip(golden_out, rtl_out))
    waves = None
    if sim == "verilator" and (opts.get("waves") or (mismatched and corrupt_byte is None)):
        # a waveform of the run, beside its log: asked for, or because the RTL disagreed
        say("Verilator: re-running with waveform tracing")
        waves = str(rs.waves_for(jobs, Path(out_dir) / "rtl_waves"))
    counter_diffs = []
    for i, (g, r) in enumerate(zip(golden_counts, rtl_counts)):
        for k in COUNTER_NAMES:
            if int(g[k]) != int(r[k]):
                counter_diffs.append(f"input {i}: {k} golden={g[k]} rtl={r[k]}")
        if int(r.get("error", 0)):
            counter_diffs.append(f"input {i}: RTL status error code {r['error']}")

    say("onnxruntime reference")
    ref = _onnx_reference(build, xs, program)
    deq = np.stack([build.dequantize_output(build.decode_output(o, program)) for o in rtl_out])
    deq = deq.reshape(ref.shape)
    flat_ref, flat_deq = ref.reshape(len(xs), -1), deq.reshape(len(xs), -1)
    macs = build.macs(program)
    mean_cycles = float(np.mean(cycles))
    report = {
        "build": str(Path(out_dir)),
        "program": program,
        "sim": sim,
        "config": cfg.name,
        "inputs": n_inputs,
        "bit_exact": mismatched == 0 and not counter_diffs,
        "mismatched_bytes": int(mismatched),
        "counters_match": not counter_diffs,
        "counter_diffs": counter_diffs[:20],
        "cycles": mean_cycles,
        "cycles_estimate": float(np.mean(est)),
        "macs": int(macs),
        "pe_utilization": macs / (mean_cycles * cfg.n_pes) if mean_cycles else 0.0,
        "dram_weight_bytes": float(np.mean([c["w_rd_bytes"] for c in rtl_counts])),
        "dram_act_bytes": float(np.mean([c["act_rd_bytes"] + c["act_wr_bytes"] for c in rtl_counts])),
        "dram_instr_bytes": float(np.mean([c["instr_rd_bytes"] for c in rtl_counts])),
        "onnx_max_abs_err": float(np.abs(flat_ref - flat_deq).max()),
        "onnx_output_range": float(np.abs(flat_ref).max()),
        "onnx_top1_agreement": float(np.mean(flat_ref.argmax(1) == flat_deq.argmax(1))),
        "pb_hits": float(np.mean([c["pb_hits"] for c in rtl_counts])),
        "pb_misses": float(np.mean([c["pb_misses"] for c in rtl_counts])),
        "resident": resident,
        "waves": waves,
        "dram_weight_bytes_no_pb": None if cold is None else int(cold.w_rd_bytes),
        "sim_wall_s": wall,
        "sim_cycles_per_s": sim_cycles / wall if wall else None,
    }
    return VerifyResult(report, golden_out, rtl_out)

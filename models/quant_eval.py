"""Quantized accuracy of every SubNet of a manifest: int8 on the whole test split, RTL on a sample.

For each SubNet: compile its ONNX for an AccelConfig (calibrated on training images), then
  * int8 accuracy on the whole test split, computed by the compiler's batched integer executor of
    the quantized graph (`compiler.quantize.run_int`), which is checked to be bit-identical to the
    golden model (the spec, `sim.golden`) on `golden_sample` test images of every SubNet — any
    difference is an error, not a footnote;
  * the predicted latency on the accelerator (sim.perf, cycle-exact against the RTL; DRAM latency
    20 cycles, full bandwidth) at the config's clock, and a Pareto plot of int8 accuracy against it;
  * for the largest and smallest SubNets, `rtl_sample` test images through the Verilator RTL:
    every output byte compared with the golden model, accuracy from the RTL's own predictions.
Results are written into the manifest as each SubNet's optional `quantized` field.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["evaluate_quantized"]


def _int_outputs(graph, xq: np.ndarray) -> np.ndarray:
    from compiler.quantize import run_int
    return run_int(graph, xq)[graph.output].reshape(len(xq), -1)


def evaluate_quantized(manifest_path, cfg="8x8", golden_sample: int = 48, rtl_sample: int = 16,
                       rtl_subnets: "list[str] | None" = None, progress: bool = True, write: bool = True) -> dict:
    """Returns {subnet name: quantized record}; writes them into the manifest when ``write``."""
    import onnx
    from compiler import compile_graph, compile_onnx
    from models.subnets import load_subnets
    from models.train import CALIB_SIZE, SPLIT_SEED, load_digits_split
    from sim.golden import GoldenModel
    from sushi.artifacts import load_build
    from sushi.config import load_config
    from sim.perf import DramTiming, decode_program, predict

    cfg = load_config(cfg)
    mpath = Path(manifest_path)
    man = load_subnets(mpath)
    data = load_digits_split(SPLIT_SEED)
    xtr, xte, yte = data["train"][0][:CALIB_SIZE], data["test"][0], data["test"][1]
    build_root = mpath.parent / "builds" / cfg.name
    if rtl_subnets is None:
        rtl_subnets = [man.largest().name, man.smallest().name]
    rng = np.random.default_rng(0)
    gidx = rng.choice(len(xte), size=min(golden_sample, len(xte)), replace=False)
    ridx = gidx[:rtl_sample]
    out, rtl_jobs = {}, []
    it = man.subnets
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="int8 eval", unit="subnet", file=sys.stderr)
    for s in it:
        onnx_path = mpath.parent / s.onnx
        model = onnx.load(onnx_path)
        graph, _, _ = compile_graph(model, cfg, calib=xtr)
        bdir = build_root / s.name
        compile_onnx(model, cfg, bdir, calib=xtr, progress=False)
        b = load_build(bdir)
        xq = np.concatenate([b.quantize_input(x[None]) for x in xte])
        logits_q = _int_outputs(graph, xq)
        acc = float((logits_q.argmax(1) == yte).mean())
        # the integer executor must equal the golden model on the sampled images, byte for byte
        addr, n = b.output_region()
        for i in gidx:
            img, pb, wb = b.dram_image()
            b.write_input(img, xq[i:i + 1])
            c = GoldenModel(b.cfg).run(img, pb, wb)
            g = b.decode_output(bytes(img[addr:addr + n])).reshape(-1)
            if c.error or not np.array_equal(g.astype(np.int64), logits_q[i]):
                raise RuntimeError(f"SubNet {s.name}: golden model and integer executor differ on test image {i}")
            if s.name in rtl_subnets and i in ridx:
                rtl_jobs.append((s.name, i, bytes(img_before(b, xq[i:i + 1])), pb, wb, (addr, n),
                                 bytes(img[addr:addr + n])))
        img0, pb0, _ = b.dram_image()
        pred = predict(decode_program(img0, pb0), b.cfg, DramTiming())
        out[s.name] = {"latency_ms_predicted": pred["cycles"] / (b.cfg.clock_mhz * 1e3),
                       "cycles_predicted": int(pred["cycles"]), "accuracy": acc, "float_accuracy": s.accuracy, "drop_pp": round(100 * (s.accuracy - acc), 3),
                       "config": cfg.name, "split": "test", "size": int(len(yte)),
                       "method": "batched integer executor of the quantized graph, bit-identical to the golden "
                                 f"model on {len(gidx)} sampled test images",
                       "golden_checked": int(len(gidx))}
    if rtl_jobs:
        from sim.rtl import Job, RtlSim
        res = RtlSim(cfg).run_jobs([Job(dram_image=j[2], prog_base=j[3], weight_base=j[4], read_back=[j[5]])
                                    for j in rtl_jobs])
        per = {}
        for j, r in zip(rtl_jobs, res):
            name, i = j[0], j[1]
            b = load_build(build_root / name)
            pred = int(b.decode_output(r.regions[0]).reshape(-1).argmax())
            d = per.setdefault(name, {"n": 0, "correct": 0, "mismatched_bytes": 0})
            d["n"] += 1
            d["correct"] += int(pred == yte[i])
            d["mismatched_bytes"] += int((np.frombuffer(r.regions[0], np.uint8) != np.frombuffer(j[6], np.uint8)).sum())
        for name, d in per.items():
            out[name]["rtl"] = {"n": d["n"], "accuracy": d["correct"] / d["n"], "bit_exact": d["mismatched_bytes"] == 0,
                                "mismatched_bytes": d["mismatched_bytes"], "sim": "verilator"}
    if write:
        from models.subnets import plot_pareto
        plot_pareto(load_subnets(mpath), mpath.parent / "pareto_latency.png",
                    latency={k: v["latency_ms_predicted"] for k, v in out.items()})
        raw = json.loads(mpath.read_text())
        for s in raw["subnets"]:
            if s["name"] in out:
                s["quantized"] = out[s["name"]]
        mpath.write_text(json.dumps(raw, indent=1) + "\n")
    return out


def img_before(b, xq1):
    """A fresh DRAM image of build ``b`` holding input ``xq1`` (the RTL job's starting image)."""
    img, _, _ = b.dram_image()
    b.write_input(img, xq1)
    return img


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m models.quant_eval", description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("--config", default="8x8")
    ap.add_argument("--golden-sample", type=int, default=48)
    ap.add_argument("--rtl-sample", type=int, default=16)
    a = ap.parse_args(argv)
    from sushi import tools
    tools.setup()
    res = evaluate_quantized(a.manifest, a.config, a.golden_sample, a.rtl_sample)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

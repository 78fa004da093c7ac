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
                       rtl_subnets: "list[str] | None" = None, progress: bool = True, write: bool = True,
                       supernet_build=None) -> dict:
    """Returns {subnet name: quantized record}; writes them into the manifest when ``write``.

    Without ``supernet_build`` every SubNet is compiled on its own (its own weight scales).  With
    ``supernet_build = (out_dir, plan)`` from ``compile_supernet(..., return_plan=True)`` the
    SubNets are evaluated as they are served: each program of the one shared weight image."""
    import onnx
    from compiler import compile_graph, compile_onnx
    from models.subnets import load_subnets
    from models.train import CALIB_SIZE, SPLIT_SEED, load_digits_split
    from sushi.artifacts import load_build
    from sushi.config import load_config

    mpath = Path(manifest_path)
    man = load_subnets(mpath)
    data = load_digits_split(SPLIT_SEED)
    xtr = data["train"][0][:CALIB_SIZE]

    def items():
        """(SubNet entry, quantized graph, Build, program name) per SubNet."""
        if supernet_build is not None:
            out_dir, plan = supernet_build
            b = load_build(out_dir)
            for s in man.subnets:
                yield s, plan.subnets[s.name]["graph"], b, s.name
            return
        c = load_config(cfg)
        for s in man.subnets:
            model = onnx.load(mpath.parent / s.onnx)
            graph, _, _ = compile_graph(model, c, calib=xtr)
            bdir = mpath.parent / "builds" / c.name / s.name
            compile_onnx(model, c, bdir, calib=xtr, progress=False)
            yield s, graph, load_build(bdir), "main"

    n = len(man.subnets)
    it = items()
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=n, desc="int8 eval", unit="subnet", file=sys.stderr)
    out = _evaluate(it, data, rtl_subnets or [man.largest().name, man.smallest().name], golden_sample,
                    rtl_sample, "shared SuperNet weight image" if supernet_build is not None else "standalone")
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


def _evaluate(items, data, rtl_subnets, golden_sample, rtl_sample, weights: str) -> dict:
    from sim.golden import GoldenModel
    from sim.perf import DramTiming, decode_program, predict
    xte, yte = data["test"]
    rng = np.random.default_rng(0)
    gidx = rng.choice(len(xte), size=min(golden_sample, len(xte)), replace=False)
    ridx = set(gidx[:rtl_sample].tolist())
    out, rtl_jobs, cfg = {}, [], None
    for s, graph, b, prog in items:
        cfg = b.cfg
        xq = np.concatenate([b.quantize_input(x[None], prog) for x in xte])
        logits_q = _int_outputs(graph, xq)
        acc = float((logits_q.argmax(1) == yte).mean())
        # the integer executor must equal the golden model on the sampled images, byte for byte
        addr, n = b.output_region(prog)
        img0, pb, wb = b.dram_image(prog)
        for i in gidx:
            img = bytearray(img0)
            b.write_input(img, xq[i:i + 1], prog)
            start = bytes(img)
            c = GoldenModel(b.cfg).run(img, pb, wb)
            g = b.decode_output(bytes(img[addr:addr + n]), prog).reshape(-1)
            if c.error or not np.array_equal(g.astype(np.int64), logits_q[i]):
                raise RuntimeError(f"SubNet {s.name}: golden model and integer executor differ on test image {i}")
            if s.name in rtl_subnets and int(i) in ridx:
                rtl_jobs.append((s.name, b, prog, int(i), start, pb, wb, (addr, n), bytes(img[addr:addr + n])))
        pred = predict(decode_program(img0, pb), b.cfg, DramTiming())
        out[s.name] = {"latency_ms_predicted": pred["cycles"] / (b.cfg.clock_mhz * 1e3),
                       "cycles_predicted": int(pred["cycles"]), "accuracy": acc,
                       "float_accuracy": s.accuracy, "drop_pp": round(100 * (s.accuracy - acc), 3),
                       "config": b.cfg.name, "weights": weights, "split": "test", "size": int(len(yte)),
                       "method": "batched integer executor of the quantized graph, bit-identical to the golden "
                                 f"model on {len(gidx)} sampled test images",
                       "golden_checked": int(len(gidx))}
    if rtl_jobs:
        from sim.rtl import Job, RtlSim
        big = max(len(j[4]) for j in rtl_jobs)
        res = RtlSim(cfg, dram_bytes=max(1 << 21, 1 << (big - 1).bit_length())).run_jobs(
            [Job(dram_image=j[4], prog_base=j[5], weight_base=j[6], read_back=[j[7]]) for j in rtl_jobs])
        per = {}
        for j, r in zip(rtl_jobs, res):
            name, b, prog, i = j[0], j[1], j[2], j[3]
            pred = int(b.decode_output(r.regions[0], prog).reshape(-1).argmax())
            d = per.setdefault(name, {"n": 0, "correct": 0, "mismatched_bytes": 0})
            d["n"] += 1
            d["correct"] += int(pred == yte[i])
            d["mismatched_bytes"] += int((np.frombuffer(r.regions[0], np.uint8) != np.frombuffer(j[8], np.uint8)).sum())
        for name, d in per.items():
            out[name]["rtl"] = {"n": d["n"], "accuracy": d["correct"] / d["n"], "bit_exact": d["mismatched_bytes"] == 0,
                                "mismatched_bytes": d["mismatched_bytes"], "sim": "verilator"}
    return out


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

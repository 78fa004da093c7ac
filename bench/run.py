"""Benchmarks of the inference path; JSON out.  `python -m bench.run --json FILE` (or `make bench`).

1. PE utilization of compute-bound conv layers on the 8x8 preset (Verilator), target >= 0.90.
2. RTL cycles against the performance model's estimate, per network and layer.
3. Verilator simulated cycles per second for the 8x8 preset, target >= 1e6.
4. Compile time of a ResNet-50-sized ONNX (224x224), target <= 10 s.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sushi import tools

tools.setup()

from compiler import compile_onnx  # noqa: E402
from models import zoo  # noqa: E402
from sushi.config import PRESETS, AccelConfig  # noqa: E402
from sushi.verify import verify_build  # noqa: E402


#: ResNet-50 needs 576 tiles per 3x3x512 group and ~12.5k words for its last layers: larger
#: buffers than the board presets have (the compiler says so for those presets).
RESNET_CFG = AccelConfig(name="16x8-xl", pe_rows=16, pe_cols=8, act_buf_words=16384, wbuf_tiles=1024)


def conv_model(cin, cout, k, hw, seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(cout)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, kernel_shape=[k, k]),
         helper.make_node("Relu", ["c"], ["y"])],
        f"conv{k}x{k}_{cin}_{cout}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, hw, hw])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def bench_utilization(root: Path, log) -> dict:
    cfg = PRESETS["8x8"]
    out = {}
    for cin, cout, k, hw in [(64, 64, 3, 12), (32, 64, 3, 16), (128, 128, 3, 8), (64, 64, 1, 16)]:
        name = f"conv{k}x{k}_{cin}to{cout}_{hw}x{hw}"
        log(f"utilization: {name}")
        compile_onnx(conv_model(cin, cout, k, hw), cfg, root / name)
        rep = verify_build(root / name, sim="verilator", n_inputs=1).report
        out[name] = {k2: rep[k2] for k2 in ("bit_exact", "cycles", "cycles_estimate", "macs", "pe_utilization",
                                            "sim_cycles_per_s")}
    return out


def bench_networks(root: Path, log) -> dict:
    out = {}
    for preset in ("tiny", "8x8"):
        for name in ("tiny_cnn", "resnet_tiny", "mobilenet_tiny"):
            log(f"network: {name} on {preset}")
            d = root / f"{name}_{preset}"
            compile_onnx(getattr(zoo, name)(), PRESETS[preset], d)
            rep = verify_build(d, sim="verilator", n_inputs=2).report
            out[f"{name}@{preset}"] = {
                **{k: rep[k] for k in ("bit_exact", "cycles", "cycles_estimate", "macs", "pe_utilization",
                                       "dram_weight_bytes", "dram_act_bytes", "onnx_max_abs_err",
                                       "onnx_top1_agreement", "sim_cycles_per_s")},
                "estimate_over_rtl": rep["cycles_estimate"] / rep["cycles"],
            }
    return out


def bench_sim_speed(root: Path, log) -> dict:
    """Simulated cycles per second on a long compute-bound program (8x8), excluding the build."""
    cfg = PRESETS["8x8"]
    log("Verilator speed: 8x8, conv 3x3 64->64 on 12x12, 8 inputs in one run")
    d = root / "speed"
    compile_onnx(conv_model(64, 64, 3, 12, seed=1), cfg, d)
    verify_build(d, sim="verilator", n_inputs=1)  # build (cached afterwards)
    rep = verify_build(d, sim="verilator", n_inputs=8).report
    return {"preset": "8x8", "cycles_per_inference": rep["cycles"], "inferences": 8,
            "sim_wall_s": rep["sim_wall_s"], "sim_cycles_per_s": rep["sim_cycles_per_s"],
            "target_cycles_per_s": 1e6, "met": (rep["sim_cycles_per_s"] or 0) >= 1e6}


def bench_compile_time(root: Path, log) -> dict:
    log("compile time: ResNet-50 224x224")
    t0 = time.perf_counter()
    model = zoo.resnet50()
    t_build = time.perf_counter() - t0
    p = root / "resnet50.onnx"
    onnx.save(model, p)
    t0 = time.perf_counter()
    man = compile_onnx(p, RESNET_CFG, root / "resnet50")
    t = time.perf_counter() - t0
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return {"model": "resnet50 224x224", "params": params, "onnx_bytes": p.stat().st_size,
            "config": RESNET_CFG.to_json(), "compile_s": t, "target_s": 10.0, "met": t <= 10.0, "model_build_s": t_build,
            "n_tiles": man["weights"]["n_tiles"], "n_instrs": man["programs"]["main"]["n_instrs"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json", default="bench/results/bench.json")
    ap.add_argument("--only", choices=["utilization", "networks", "speed", "compile"], action="append")
    args = ap.parse_args(argv)
    from rich.console import Console
    con = Console(stderr=True)
    log = lambda m: con.print(f"[cyan]bench[/cyan] {m}")  # noqa: E731
    parts = {"utilization": bench_utilization, "networks": bench_networks, "speed": bench_sim_speed,
             "compile": bench_compile_time}
    res = {"machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()}}
    with tempfile.TemporaryDirectory(prefix="sushi-bench-") as tmp:
        for name, fn in parts.items():
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            res[name] = fn(Path(tmp), log)
            res[name + "_wall_s"] = time.perf_counter() - t0
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    con.print_json(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

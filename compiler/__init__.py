"""SUSHI compiler: ONNX -> IR -> fold/fuse -> int8 -> tiles + program + manifest (docs/formats.md)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path


from sushi.blas import single_blas_thread
from sushi.config import AccelConfig, ConfigError, load_config

from .output import publish, staging_dir
from .errors import CompileError
from .lower import legalize, lower
from .onnx_import import import_onnx, load_model, ops_markdown, supported_ops
from .passes import optimize
from .quantize import calibrate, calibration_samples, quantize

__all__ = ["compile_onnx", "compile_graph", "CompileError", "supported_ops", "ops_markdown", "FORMAT",
           "FORMAT_VERSION"]

FORMAT = "sushi-build"
FORMAT_VERSION = 1


class _Progress:
    def __init__(self, enabled):
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.steps = {}

    def step(self, name, msg=""):
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 4)
        self.last = now
        if self.enabled:
            print(f"[sushi.compile {now - self.t0:6.2f}s] {name}: {msg}", file=sys.stderr, flush=True)

    def log(self, msg):
        if self.enabled:
            print(f"[sushi.compile {time.perf_counter() - self.t0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def compile_graph(model, cfg: AccelConfig, calib=None, progress: bool = False):
    """ModelProto -> (graph, Lowered, info) without writing files."""
    prog = progress if isinstance(progress, _Progress) else _Progress(progress)
    g = import_onnx(model)
    prog.step("import", f"{len(model.graph.node)} ONNX nodes -> {len(g.nodes)} IR nodes")
    stats = optimize(g)
    stats.update(legalize(g, cfg))
    prog.step("optimize", ", ".join(f"{k} x{v}" for k, v in stats.items() if v) or "nothing to do")
    x, cinfo = calibration_samples(calib, g.tensors[g.input].chw, g.input_name)
    scales = calibrate(g, x)
    prog.step("calibrate", f"{len(x)} sample(s) from {cinfo['source']}")
    quantize(g, scales)
    prog.step("quantize", f"{len(g.nodes)} layers")
    low = lower(g, cfg, prog.log)
    prog.step("lower", f"{low.n_instrs} instructions, {low.n_tiles} tiles, {low.total_bytes} DRAM bytes")
    return g, low, dict(calibration=cinfo, passes=stats, scales=scales, steps=prog.steps)


def _io_record(name, t, shape, scale):
    return dict(name=name, shape=[int(v) for v in shape], addr=t["addr"], hwc=t["hwc"],
                c_words=t["c_words"], bytes=t["bytes"], scale=float(scale))


@single_blas_thread
def compile_onnx(model_path_or_proto, cfg, out_dir, calib=None, progress: bool = True) -> dict:
    """Compile an ONNX model for one accelerator configuration.

    Writes OUT/manifest.json, OUT/weights.bin, OUT/program_main.bin and OUT/model.onnx (a copy of
    the source) atomically (a failed compile leaves no output directory).  ``cfg`` is an
    AccelConfig, a preset name or a JSON path; ``calib`` an .npz path, an N x C x H x W array or
    None (fixed-seed random inputs, with a warning).  Returns the manifest.
    """
    try:
        cfg = load_config(cfg)
    except ConfigError as e:
        raise CompileError(f"accelerator config: {e}") from None
    prog = _Progress(progress)
    src = model_path_or_proto
    if isinstance(src, (str, os.PathLike)):
        raw = None
        model = load_model(src)
        src_path = Path(src)
    else:
        model = load_model(src)
        raw = model.SerializeToString() if not isinstance(src, (bytes, bytearray)) else bytes(src)
        src_path = None
    # import names unnamed nodes in place: work on a copy so the saved source stays untouched
    work = type(model)()
    work.CopyFrom(model)
    g, low, info = compile_graph(work, cfg, calib, prog)

    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    try:
        if src_path is not None:
            shutil.copyfile(src_path, tmp / "model.onnx")
            sha = hashlib.sha256(src_path.read_bytes()).hexdigest()
        else:
            (tmp / "model.onnx").write_bytes(raw)
            sha = hashlib.sha256(raw).hexdigest()
        (tmp / "weights.bin").write_bytes(low.weight_image)
        (tmp / "program_main.bin").write_bytes(low.prog_image)
        gin, gout = g.input, g.output
        in_t = g.tensors[gin]
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION,
            "generator": "sushi.compiler",
            "source": {"file": "model.onnx", "sha256": sha, "graph": model.graph.name},
            "accel": cfg.to_json(),
            "memory": {"prog_base": low.prog_base, "weight_base": low.weight_base,
                       "act_base": low.act_base, "act_bytes": low.act_bytes,
                       "total_bytes": low.total_bytes, "align": 64},
            "weights": {"file": "weights.bin", "n_tiles": low.n_tiles, "bytes": len(low.weight_image),
                        "tile_bytes": cfg.tile_bytes},
            "programs": {"main": {
                "file": "program_main.bin", "base": low.prog_base, "bytes": len(low.prog_image),
                "n_instrs": low.n_instrs,
                "records": {"offset": low.records_offset, "count": low.n_records},
                "luts": low.n_luts,
                "macs": int(sum(layer["macs"] for layer in low.layers)),
                "input": _io_record(g.input_name, low.tensors[gin], in_t.shape, info["scales"][gin]),
                "output": _io_record(g.output_name, low.tensors[gout], g.output_shape, info["scales"][gout]),
                "layers": low.layers,
                "tensors": {k: {**v, "scale": float(info["scales"][k])} for k, v in low.tensors.items()},
            }},
            "calibration": info["calibration"],
            "passes": info["passes"],
            "steps_s": dict(info["steps"]),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prog.step("write", f"{out_dir} ({low.total_bytes} DRAM bytes, {manifest['programs']['main']['macs']} MACs)")
    return manifest

"""Reading a compiled build directory (docs/formats.md): DRAM image, input/output (de)quantization."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .config import AccelConfig, ConfigError

__all__ = ["Build", "load_build", "BuildError", "FORMAT", "FORMAT_VERSION", "FORMAT_VERSIONS"]

FORMAT = "sushi-build"
FORMAT_VERSION = 2
#: versions this reader understands: 1 (one network, program "main"), 2 (SuperNet: one program per
#: SubNet, a shared weight image, SubGraph LOADSG programs, share report and catalog)
FORMAT_VERSIONS = (1, 2)


class BuildError(ValueError):
    """A build directory that is missing, incomplete or of another format."""


def _get(d, path: str, where: str, kind=None):
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise BuildError(f"{where}: missing field '{path}'")
        cur = cur[part]
    if kind is not None and not isinstance(cur, kind) or isinstance(cur, bool) and kind is int:
        raise BuildError(f"{where}: field '{path}' has the wrong type ({type(cur).__name__})")
    return cur


class Build:
    """A compiled network: ``load_build(out_dir)``."""

    def __init__(self, out_dir, manifest: dict):
        self.dir = Path(out_dir)
        self.manifest = manifest
        self.cfg = self._cfg()

    def _cfg(self) -> AccelConfig:
        try:
            return AccelConfig.from_json(self.manifest["accel"], source=f"{self.dir / 'manifest.json'}: accel")
        except ConfigError as e:
            raise BuildError(str(e)) from None

    # ---- files
    @property
    def onnx_path(self) -> Path:
        return self.dir / self.manifest.get("source", {}).get("file", "model.onnx")

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def program_names(self) -> list:
        return list(self.manifest["programs"])

    def program(self, program: str = "main") -> dict:
        progs = self.manifest["programs"]
        if program == "main" and program not in progs and self.manifest.get("default_program") in progs:
            program = self.manifest["default_program"]      # v2: "main" = the default (largest) SubNet
        if program not in progs:
            raise BuildError(f"{self.dir / 'manifest.json'}: no program '{program}' (have {sorted(progs)})")
        return progs[program]

    def _read(self, name: str, nbytes: int) -> bytes:
        p = self.dir / name
        if not p.is_file():
            raise BuildError(f"{p}: file is missing")
        raw = p.read_bytes()
        if len(raw) != nbytes:
            raise BuildError(f"{p}: {len(raw)} bytes, the manifest says {nbytes}")
        return raw

    def macs(self, program: str = "main") -> int:
        return int(self.program(program)["macs"])

    @property
    def memory(self) -> dict:
        return self.manifest["memory"]

    # ---- DRAM image
    def dram_image(self, program: str = "main"):
        """-> (bytearray of total DRAM bytes with program + weights, activation region zero,
        prog_base, weight_base)."""
        p = self.program(program)
        mem = self.memory
        img = bytearray(int(mem["total_bytes"]))
        prog = self._read(p["file"], int(p["bytes"]))
        w = self.manifest["weights"]
        wts = self._read(w["file"], int(w["bytes"]))
        base, wb = int(p["base"]), int(mem["weight_base"])
        img[base:base + len(prog)] = prog
        img[wb:wb + len(wts)] = wts
        if self.version >= 2:
            # one image for every query and SubGraph load: all programs at their own bases
            for other in self.manifest["programs"].values():
                if other is not p:
                    raw = self._read(other["file"], int(other["bytes"]))
                    img[int(other["base"]):int(other["base"]) + len(raw)] = raw
            for sg in self.manifest.get("subgraphs", {}).values():
                raw = self._read(sg["file"], int(sg["bytes"]))
                img[int(sg["base"]):int(sg["base"]) + len(raw)] = raw
        return img, base, wb

    # ---- SuperNet builds (version 2)
    @property
    def subgraph_ids(self) -> list:
        return list(self.manifest.get("subgraphs", {}))

    def subgraph(self, sg_id: str) -> dict:
        """{file, base, bytes, tiles, runs, subnets} of a SubGraph's LOADSG program."""
        sgs = self.manifest.get("subgraphs", {})
        if sg_id not in sgs:
            raise BuildError(f"{self.dir / 'manifest.json'}: no SubGraph '{sg_id}' "
                             f"(have {sorted(sgs) if sgs else 'none'})")
        return sgs[sg_id]

    def _json(self, key: str) -> dict:
        ent = self.manifest.get(key)
        if not ent:
            raise BuildError(f"{self.dir / 'manifest.json'}: no '{key}' (a version-2 SuperNet build has one)")
        p = self.dir / ent["file"]
        if not p.is_file():
            raise BuildError(f"{p}: file is missing")
        return json.loads(p.read_text())

    def catalog(self) -> dict:
        return self._json("catalog")

    def share_report(self) -> dict:
        return self._json("share")

    # ---- input / output
    def quantize_input(self, x, program: str = "main") -> np.ndarray:
        """float NCHW (batch 1) -> int8 NCHW: clip(rint(x / s_in), -128, 127)."""
        inp = self.program(program)["input"]
        x = np.asarray(x, np.float64)
        if x.size != int(np.prod(inp["shape"])):
            raise BuildError(f"input has shape {list(x.shape)}, the network expects {inp['shape']}")
        x = x.reshape(inp["shape"])
        return np.clip(np.rint(x / inp["scale"]), -128, 127).astype(np.int8)

    def write_input(self, img: bytearray, x_q, program: str = "main") -> None:
        """Write an int8 NCHW input into the DRAM image (HWC, channels padded to whole words)."""
        inp = self.program(program)["input"]
        H, W, C = inp["hwc"]
        V = self.cfg.pe_cols
        x_q = np.asarray(x_q, np.int8).reshape(C, H, W)
        buf = np.zeros((H, W, inp["c_words"] * V), np.int8)
        buf[:, :, :C] = x_q.transpose(1, 2, 0)
        a = int(inp["addr"])
        img[a:a + buf.nbytes] = buf.tobytes()

    def output_region(self, program: str = "main"):
        """-> (addr, nbytes) of the output tensor in DRAM."""
        out = self.program(program)["output"]
        H, W, _ = out["hwc"]
        return int(out["addr"]), int(H * W * out["c_words"] * self.cfg.pe_cols)

    def decode_output(self, raw, program: str = "main") -> np.ndarray:
        """raw output bytes (HWC, padded) -> int8 array in the ONNX output shape."""
        out = self.program(program)["output"]
        H, W, C = out["hwc"]
        V = self.cfg.pe_cols
        a = np.frombuffer(bytes(raw), np.int8)
        if a.size != H * W * out["c_words"] * V:
            raise BuildError(f"output has {a.size} bytes, expected {H * W * out['c_words'] * V}")
        a = a.reshape(H, W, out["c_words"] * V)[:, :, :C].transpose(2, 0, 1)
        return np.ascontiguousarray(a).reshape(out["shape"])

    def read_tensor(self, img, name: str, program: str = "main") -> np.ndarray:
        """Any activation tensor of the program (debugging): int8 [C, H, W]."""
        t = self.program(program)["tensors"][name]
        H, W, C = t["hwc"]
        V = self.cfg.pe_cols
        a = np.frombuffer(bytes(img[t["addr"]:t["addr"] + t["bytes"]]), np.int8)
        return np.ascontiguousarray(a.reshape(H, W, t["c_words"] * V)[:, :, :C].transpose(2, 0, 1))

    def dequantize_output(self, y_q, program: str = "main") -> np.ndarray:
        """y = q * s_out"""
        return np.asarray(y_q, np.float32) * np.float32(self.program(program)["output"]["scale"])

    def __repr__(self):
        return f"Build({str(self.dir)!r}, accel={self.cfg.name!r})"


_REQUIRED = [("memory.prog_base", int), ("memory.weight_base", int), ("memory.total_bytes", int),
             ("weights.file", str), ("weights.n_tiles", int), ("weights.bytes", int), ("accel", dict),
             ("programs", dict)]
_PROG_REQUIRED = [("file", str), ("base", int), ("bytes", int), ("n_instrs", int), ("macs", int),
                  ("input.shape", list), ("input.addr", int), ("input.hwc", list), ("input.c_words", int),
                  ("input.scale", (int, float)), ("output.shape", list), ("output.addr", int),
                  ("output.hwc", list), ("output.c_words", int), ("output.scale", (int, float)),
                  ("layers", list)]


def load_build(out_dir) -> Build:
    """Open a build directory written by ``compiler.compile_onnx``; errors name the file and field."""
    d = Path(out_dir)
    mpath = d / "manifest.json"
    if not d.is_dir():
        raise BuildError(f"{d}: build directory does not exist")
    if not mpath.is_file():
        raise BuildError(f"{mpath}: manifest is missing (not a build directory?)")
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BuildError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise BuildError(f"{mpath}: expected a JSON object")
    if m.get("format") != FORMAT:
        raise BuildError(f"{mpath}: field 'format' is {m.get('format')!r}, expected {FORMAT!r}")
    if m.get("version") not in FORMAT_VERSIONS:
        raise BuildError(f"{mpath}: field 'version' is {m.get('version')!r}, this reader supports "
                         f"{', '.join(map(str, FORMAT_VERSIONS))}")
    for path, kind in _REQUIRED:
        _get(m, path, str(mpath), kind)
    for name in m["programs"]:
        for path, kind in _PROG_REQUIRED:
            _get(m["programs"][name], path, f"{mpath}: programs.{name}", kind)
    from sushi.isa import ISA_VERSION
    built_isa = (m.get("accel", {}).get("derived") or {}).get("isa_version")
    if built_isa is not None and built_isa != ISA_VERSION:
        raise BuildError(f"{mpath}: built for ISA v{built_isa}, this SUSHI runs ISA v{ISA_VERSION}; "
                         f"compile the model again")
    if m["version"] >= 2:
        for k, sg in m.get("subgraphs", {}).items():
            for path, kind in (("file", str), ("base", int), ("bytes", int), ("boxes", list)):
                _get(sg, path, f"{mpath}: subgraphs.{k}", kind)
    return Build(d, m)

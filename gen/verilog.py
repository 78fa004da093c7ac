"""Verilog generation of ``sushi_accel`` and its hardware/software contract (accel.json)."""
from __future__ import annotations

import json
from pathlib import Path

from amaranth.back import verilog

from sushi.config import AccelConfig, load_config

__all__ = ["generate", "port_list"]


def port_list(top) -> list[dict]:
    """[{name, dir, width}] of the Verilog module of component ``top``, clk/rst first."""
    from amaranth.lib.wiring import In
    out = [{"name": "clk", "dir": "in", "width": 1}, {"name": "rst", "dir": "in", "width": 1}]
    for path, member, value in top.signature.flatten(top):
        name = "__".join(str(p) for p in path)
        out.append({"name": name, "dir": "in" if member.flow == In else "out",
                    "width": len(value)})
    return out


def generate(cfg: "AccelConfig | str", out_dir) -> Path:
    """Write out_dir/sushi_accel.v (module ``sushi_accel``) and out_dir/accel.json; returns the .v path."""
    from rtl.accel import SushiAccel
    from rtl.csr import CSR_MAP
    cfg = load_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    top = SushiAccel(cfg)
    ports = port_list(top)
    text = verilog.convert(top, name="sushi_accel", emit_src=False)
    vpath = out / "sushi_accel.v"
    vpath.write_text(text)
    meta = {"accel": cfg.to_json(), "module": "sushi_accel", "csr_map": CSR_MAP,
            "ports": ports}
    (out / "accel.json").write_text(json.dumps(meta, indent=2) + "\n")
    return vpath

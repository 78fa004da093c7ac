"""The hardware units a program needs, checked against the accelerator configuration it is for.

A configuration may leave vector-unit operations out (``AccelConfig.op_maxpool``, ``op_avgpool``,
``op_add``, ``op_mul``, ``op_lut``; docs/boards.md): the hardware answers an instruction that needs
a missing one with error 2 (unsupported instruction) and executes nothing more of that program.
The compiler refuses to write such a program: :func:`check_features` names every layer and
operation concerned.  ``compiler.output.publish`` runs :func:`check_build` on every build directory
before it appears, so plain and SuperNet builds are both covered.
"""
from __future__ import annotations

import json
from pathlib import Path

from sushi.config import VECTOR_OPS, AccelConfig
from sushi.isa import INSTR_BYTES, Instr, IsaError, Op, decode

from .errors import CompileError

__all__ = ["check_features", "check_build", "required_feature"]


def required_feature(ins: Instr) -> "str | None":
    """The AccelConfig field (a key of VECTOR_OPS) an instruction needs, or None."""
    if ins.op == Op.POOL:
        return "op_avgpool" if ins.fields["mode"] else "op_maxpool"
    return {Op.ADD: "op_add", Op.MUL: "op_mul", Op.LUT: "op_lut"}.get(ins.op)


def _instrs(prog) -> list:
    """[(Instr, layer label or None)] of a program image (up to HALT), a list of Instr / encoded
    instructions / ``(op, fields, layer)`` tuples (compiler.lower's emitter) or a Lowered."""
    if hasattr(prog, "prog_image"):
        prog = prog.prog_image
    if isinstance(prog, (bytes, bytearray, memoryview)):
        raw = bytes(prog)
        out = []
        for i in range(0, len(raw) - INSTR_BYTES + 1, INSTR_BYTES):
            ins = decode(raw[i:i + INSTR_BYTES])
            if ins.op == Op.HALT:
                break
            out.append((ins, None))
        return out
    out = []
    for x in prog:
        if isinstance(x, Instr):
            out.append((x, None))
        elif isinstance(x, (bytes, bytearray)):
            out.append((decode(bytes(x)), None))
        else:
            op, fields, layer = x
            out.append((Instr(Op(op), dict(fields)), layer))
    return out


def _layer_names(layers) -> dict:
    """instruction index -> "layer 'name' (src_op)" from Lowered.layers / a manifest's layers."""
    names = {}
    for L in layers or ():
        first, n = L["instrs"]
        label = f"layer '{L['name']}' ({L.get('src_op') or L.get('op')})"
        for k in range(first, first + n):
            names[k] = label
    return names


def check_features(cfg: AccelConfig, instrs_or_program, layers=None, program: str = "program") -> None:
    """Raise CompileError if ``cfg`` lacks a unit the program needs, naming every such layer.

    ``instrs_or_program``: see :func:`_instrs`; ``layers``: the program's layer records (their
    ``instrs`` ranges give the names; a Lowered brings its own)."""
    if all(getattr(cfg, n) for n in VECTOR_OPS):
        return
    if layers is None:
        layers = getattr(instrs_or_program, "layers", None)
    try:
        instrs = _instrs(instrs_or_program)
    except (IsaError, ValueError) as e:
        raise CompileError(f"{program}: not a valid instruction stream: {e}") from None
    names = _layer_names(layers)
    missing = {}                 # (where, field) -> first instruction index, in program order
    for k, (ins, label) in enumerate(instrs):
        f = required_feature(ins)
        if f is not None and not getattr(cfg, f):
            missing.setdefault((label or names.get(k) or f"instruction {k}", ins.op.name, f), k)
    if not missing:
        return
    lines = [f"{where}: {op} needs {VECTOR_OPS[f]} ({f} is false)" for where, op, f in missing]
    more = f" (and {len(lines) - 8} more)" if len(lines) > 8 else ""
    raise CompileError(
        f"{program} needs vector operations the accelerator configuration '{cfg.name}' leaves out "
        f"(the hardware would stop with error 2, unsupported instruction): " + "; ".join(lines[:8])
        + more + ". Use a configuration with them, or a model without those layers.")


def check_build(build_dir) -> None:
    """check_features for every program of a build directory (its manifest.json: ``accel`` and
    ``programs``); nothing to check without a manifest."""
    d = Path(build_dir)
    mf = d / "manifest.json"
    if not mf.exists():
        return
    man = json.loads(mf.read_text())
    if "accel" not in man:
        return
    cfg = AccelConfig.from_json(man["accel"], source=str(mf))
    for name, p in (man.get("programs") or {}).items():
        check_features(cfg, (d / p["file"]).read_bytes(), layers=p.get("layers"),
                       program=f"program '{name}'")

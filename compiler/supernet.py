"""Compile a weight-shared SuperNet with its SubNets into one build (docs/formats.md, version 2).

ONE weight image: the SuperNet's tiles (int8 with the SuperNet's per-output-channel scales), stored
once, then the private tiles of every SubNet.  ONE program per SubNet, naming tiles by id through
the CONV descriptor; shared layers point into the SuperNet layer's tiles
(base = first tile + oy*sky + ox*skx for the kernel centre crop, the SuperNet layer's strides,
the SubNet's cin_w <= the SuperNet's).  The SubNet's own calibrated activation scales, the
SuperNet weight scales and the per-channel factor alpha from the share analysis make its
requantization records.  Each shared SuperNet layer box gets a residency key (PBKEY in the
SubNet programs); SubGraph catalog of layer boxes + one load program (LOADSG, SETRES) per SubGraph.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from sushi.blas import single_blas_thread
from sushi.config import ConfigError, load_config

from .catalog import build_catalog, loadsg_program, runs_of
from .output import publish, staging_dir
from .errors import CompileError
from .lower import _align, _cdiv, channel_words, legalize, lower, pack_dense_tiles, pack_dw_tiles
from .onnx_import import import_onnx, load_model
from .passes import optimize
from .quantize import calibration_samples, _ratio, calibrate, mult_shift, quantize
from .share import match_subnet, zero_padded_tensors

__all__ = ["compile_supernet", "SupernetPlan", "plan_supernet", "verify_steps", "verify_subnet", "run_steps_golden",
           "steps_to_rtl_jobs", "SHARE_FILE", "CATALOG_FILE"]

SHARE_FILE = "share.json"
SHARE_SUMMARY = "share.txt"
CATALOG_FILE = "catalog.json"


class _Log:
    def __init__(self, on):
        self.on, self.t0 = on, time.perf_counter()

    def __call__(self, msg):
        if self.on:
            print(f"[sushi.compile-supernet {time.perf_counter() - self.t0:6.2f}s] {msg}", file=sys.stderr, flush=True)


def _graph(path, cfg, what):
    try:
        model = load_model(str(path))
    except CompileError as e:
        raise CompileError(f"{what}: {e}") from None
    work = type(model)()
    work.CopyFrom(model)
    g = import_onnx(work)
    optimize(g)
    legalize(g, cfg)
    return model, g


class SupernetPlan:
    """Everything compile_supernet computed, in memory (tests use the quantized graphs)."""

    def __init__(self):
        self.super_graph = None
        self.super_layout = {}        # SuperNet conv node -> tile layout dict
        self.n_super_tiles = 0
        self.super_tiles = None       # int8 [n, R, V]
        self.subnets = {}             # name -> dict(graph, model, shares, ext, scales, low, ...)
        self.share_report = None
        self.catalog = None
        self.keys = {}                # residency key -> layer box geometry


def _super_layout(g, cfg):
    R, V = cfg.pe_rows, cfg.pe_cols
    cw = channel_words(g, R, V)
    layout, chunks, n = {}, [], 0
    for node in g.nodes:
        if node.op != "conv":
            continue
        q, a = node.attrs["q"], node.attrs
        kh, kw = a["kh"], a["kw"]
        cin_w = cw[node.inputs[0]]
        if a.get("dw"):
            NT = _cdiv(kh * kw, R)
            t = pack_dw_tiles(q["W"], R, V, cin_w)
            d = dict(first=n, count=len(t), dw=1, kh=kh, kw=kw, cin_w=cin_w, groups=cin_w, sg=NT, sky=0, skx=0)
        else:
            t = pack_dense_tiles(q["W"], R, V, cin_w)
            G = _cdiv(q["W"].shape[0], R)
            d = dict(first=n, count=len(t), dw=0, kh=kh, kw=kw, cin_w=cin_w, groups=G,
                     sg=kh * kw * cin_w, sky=kw * cin_w, skx=cin_w)
        d["shape"] = [int(v) for v in q["W"].shape]
        layout[node.name] = d
        chunks.append(t)
        n += len(t)
    tiles = np.concatenate(chunks) if chunks else np.zeros((0, R, V), np.int8)
    return layout, tiles


def _tile_mapping(ls, node, L, cin_w, zero, cfg):
    """-> (ext descriptor, reason).  The shared slice as a CONV descriptor, or why it cannot be."""
    R, V = cfg.pe_rows, cfg.pe_cols
    co, ci, kh, kw = ls.shape
    oy, ox = ls.crop
    if L["dw"]:
        if (kh, kw) != (L["kh"], L["kw"]):
            return None, (f"depthwise kernel crop {kh}x{kw} of {L['kh']}x{L['kw']} not tile-expressible "
                          f"(kernel positions are packed p = ky*kw + kx into tile rows)")
        if cin_w > L["cin_w"]:
            return None, f"{cin_w} channel words > the SuperNet layer's {L['cin_w']}"
        return dict(base=L["first"], sg=L["sg"], sky=0, skx=0), ""
    if cin_w > L["cin_w"]:
        return None, f"input channel words {cin_w} > the SuperNet tile layout's {L['cin_w']}"
    if _cdiv(co, R) > L["groups"]:
        return None, f"{_cdiv(co, R)} output groups > the SuperNet layer's {L['groups']}"
    if ci < cin_w * V and node.inputs[0] not in zero:
        return None, (f"input padding channels {ci}..{cin_w * V - 1} are not provably zero (a LUT with "
                      f"f(0) != 0 feeds this layer) and the SuperNet tiles hold weights there")
    return dict(base=L["first"] + oy * L["sky"] + ox * L["skx"], sg=L["sg"], sky=L["sky"], skx=L["skx"]), ""


def _requant_shared(node, S, ls, scales):
    """Override node.attrs['q'] of a shared layer: SuperNet int8 slice, s_w = alpha * s_w_super."""
    q = node.attrs["q"]
    Sq = S.attrs["q"]
    co, ci, kh, kw = ls.shape
    oy, ox = ls.crop
    s_in, s_out = scales[node.inputs[0]], scales[node.output]
    s_w = np.asarray(ls.alpha, np.float64) * Sq["s_w"][:co]
    W = Sq["W"][:co, :ci, oy:oy + kh, ox:ox + kw]
    bias = np.clip(np.rint(node.params["B"].astype(np.float64) / (s_in * s_w)), -(2 ** 31), 2 ** 31 - 1)
    mult, shift = mult_shift(_ratio(node, s_in * s_w / s_out))
    q.update(W=np.ascontiguousarray(W), bias=bias.astype(np.int64), mult=mult, shift=shift, s_w=s_w)


def _tile_fetches(low, priv_shift: int = 0) -> dict:
    """{tile id: fetches per query} from the lowered layers (each CONV band fetches all its tiles)."""
    out = {}
    for L in low.layers:
        if L["op"] not in ("conv", "dwconv", "gemm"):
            continue
        B = L["bands"]
        if "shared" in L:
            d = L["shared"]
            if d["dw"]:
                NT = d["sg"]
                ids = (d["base"] + np.arange(L["groups"])[:, None] * d["sg"] + np.arange(NT)[None, :]).ravel()
            else:
                kh, kw = L["kernel"]
                g = np.arange(L["groups"])[:, None, None, None]
                ky = np.arange(kh)[None, :, None, None]
                kx = np.arange(kw)[None, None, :, None]
                c = np.arange(d["cin_w"])[None, None, None, :]
                ids = (d["base"] + g * d["sg"] + ky * d["sky"] + kx * d["skx"] + c).ravel()
        else:
            lo, n = L["tiles"]
            ids = np.arange(lo, lo + n) + priv_shift
        for t in ids.tolist():
            out[t] = out.get(t, 0) + B
    return out


def _box_use(low) -> dict:
    """{residency key: {rows, c, bands}} of one SubNet: the box of every SuperNet layer box it reads
    with a PBKEY (rows of the CONV chunk that counts from group 0), fetched ``bands`` times a query."""
    from .lower import MAX_GROUPS
    out = {}
    for L in low.layers:
        d = L.get("shared")
        if not d or d.get("key") is None:
            continue
        kh, kw = L["kernel"]
        g = min(L["groups"], MAX_GROUPS)
        rows = g if d["dw"] else g * kh * kw
        if rows > 0xFFFF:
            continue
        out[int(d["key"])] = {"rows": rows, "c": d["sg"] if d["dw"] else d["cin_w"], "bands": L["bands"]}
    return out


def _io(name, t, shape, scale):
    return dict(name=name, shape=[int(v) for v in shape], addr=t["addr"], hwc=t["hwc"],
                c_words=t["c_words"], bytes=t["bytes"], scale=float(scale))


@single_blas_thread
def plan_supernet(supernet_onnx, manifest_path, cfg, calib=None, progress=False) -> SupernetPlan:
    """Share analysis, quantization and lowering of every SubNet, in memory (no files)."""
    from models.subnets import ManifestError, load_subnets
    log = progress if isinstance(progress, _Log) else _Log(progress)
    try:
        cfg = load_config(cfg)
    except ConfigError as e:
        raise CompileError(f"accelerator config: {e}") from None
    R, V = cfg.pe_rows, cfg.pe_cols
    sp, mp = Path(supernet_onnx), Path(manifest_path)
    if not sp.is_file():
        raise CompileError(f"SuperNet ONNX {sp} does not exist")
    if not mp.is_file():
        raise CompileError(f"SubNet manifest {mp} does not exist")
    try:
        man = load_subnets(mp)
    except (ManifestError, ValueError, OSError) as e:
        raise CompileError(f"SubNet manifest: {e}") from None
    plan = SupernetPlan()
    plan.cfg, plan.manifest = cfg, man
    smodel, sg = _graph(sp, cfg, f"SuperNet {sp}")
    chw = sg.tensors[sg.input].chw
    x, cinfo = calibration_samples(calib, chw, sg.input_name, warn=False)
    if calib is None:
        warnings.warn("no calibration data given; calibrating every SubNet on fixed-seed random inputs "
                      "(accuracy may suffer: pass calib=FILE.npz)", UserWarning, stacklevel=2)
    plan.calibration = cinfo
    quantize(sg, calibrate(sg, x))
    plan.super_graph, plan.super_model = sg, smodel
    plan.super_layout, plan.super_tiles = _super_layout(sg, cfg)
    plan.n_super_tiles = len(plan.super_tiles)
    snodes = {n.name: n for n in sg.nodes}
    log(f"SuperNet {sp.name}: {len(plan.super_layout)} weight layers, {plan.n_super_tiles} tiles")

    report = {"format": "sushi-share", "version": 1, "supernet": str(sp), "match": (
        "weight initializer name of the Conv/Gemm/MatMul first, then the IR node name; proof on BN-folded "
        "weights: output-channel prefix, input-channel prefix, kernel centre crop, per-output-channel "
        "factor alpha > 0 (rtol 1e-4)"), "subnets": {}}
    plan.keys = {}                # residency key -> SuperNet layer box geometry (docs/isa.md)
    key_of = {}
    for e in man.subnets:
        path = Path(e.onnx) if Path(e.onnx).is_absolute() else mp.parent / e.onnx
        if not path.is_file():
            raise CompileError(f"SubNet '{e.name}': ONNX file {path} does not exist")
        model, g = _graph(path, cfg, f"SubNet '{e.name}' ({path})")
        if tuple(g.tensors[g.input].chw) != tuple(chw):
            raise CompileError(f"SubNet '{e.name}': input {g.tensors[g.input].chw} differs from the SuperNet's {chw}")
        scales = calibrate(g, x)
        quantize(g, scales)
        shares = match_subnet(sg, smodel, g, model)
        zero = zero_padded_tensors(g)
        cw = channel_words(g, R, V)
        nodes = {n.name: n for n in g.nodes}
        ext = {}
        for ls in shares:
            if not ls.shared:
                continue
            n = nodes[ls.layer]
            d, reason = _tile_mapping(ls, n, plan.super_layout[ls.super_layer], cw[n.inputs[0]], zero, cfg)
            if d is None:
                ls.shared, ls.reason = False, reason
                continue
            _requant_shared(n, snodes[ls.super_layer], ls, scales)
            if cfg.pb_tiles:
                a = n.attrs
                geom = dict(base=d["base"], sg=d["sg"], sky=d["sky"], skx=d["skx"], kh=a["kh"], kw=a["kw"],
                            dw=int(bool(a.get("dw"))))
                gk = tuple(sorted(geom.items()))
                if gk not in key_of and len(key_of) < cfg.res_entries:
                    key_of[gk] = len(key_of)
                    plan.keys[key_of[gk]] = dict(geom, layer=ls.super_layer)
                if gk in key_of:
                    d = dict(d, key=key_of[gk])
            ext[n.name] = d
        n_sh = sum(ls.shared for ls in shares)
        if n_sh == 0:
            warnings.warn(f"SubNet '{e.name}' shares nothing with the SuperNet: all {len(shares)} weight "
                          f"layers are private", UserWarning, stacklevel=2)
        low = lower(g, cfg, ext_tiles=ext)
        plan.subnets[e.name] = dict(entry=e, path=path, model=model, graph=g, scales=scales, shares=shares,
                                    ext=ext, low=low, n_private=low.n_tiles)
        report["subnets"][e.name] = {
            "onnx": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "shared": n_sh, "private": len(shares) - n_sh,
            "layers": [ls.as_dict() for ls in shares]}
        log(f"SubNet {e.name}: {n_sh}/{len(shares)} weight layers shared, {low.n_tiles} private tiles")
    plan.share_report = report
    return plan


def _share_summary(report, plan) -> str:
    lines = [f"share analysis of {report['supernet']}", report["match"], ""]
    for name, s in report["subnets"].items():
        lines.append(f"{name}: {s['shared']} shared, {s['private']} private")
        for L in s["layers"]:
            lines.append(f"  {L['layer']}: {L['spec']}")
    return "\n".join(lines) + "\n"


@single_blas_thread
def compile_supernet(supernet_onnx, manifest_path, cfg, out_dir, calib=None, progress: bool = True,
                     return_plan: bool = False):
    """Compile a SuperNet and every SubNet of its manifest into one build directory (format v2).

    Writes OUT/manifest.json, weights.bin (SuperNet tiles, then private tiles), program_<name>.bin
    per SubNet, subgraph_<id>.bin per SubGraph, share.json + share.txt, catalog.json, model.onnx
    (copy of the SuperNet), subnets.json (copy of the manifest).  Atomic like compile_onnx.
    Returns the manifest (and the in-memory SupernetPlan with ``return_plan``)."""
    from . import FORMAT
    log = _Log(progress)
    plan = plan_supernet(supernet_onnx, manifest_path, cfg, calib, log)
    cfg = plan.cfg
    T = cfg.tile_bytes
    # ---- tile ids: SuperNet tiles, then each SubNet's private tiles
    off = plan.n_super_tiles
    for s in plan.subnets.values():
        s["tile_offset"] = off
        off += s["n_private"]
    n_tiles = off
    # ---- tile sets (exact fetch counts) and the catalog
    fetches = {}
    for name, s in plan.subnets.items():
        # pass-1 private ids start at 0: shift them to the SubNet's offset
        fetches[name] = _tile_fetches(s["low"], s["tile_offset"])
    use = {name: _box_use(s["low"]) for name, s in plan.subnets.items()}
    plan.catalog = cat = build_catalog(use, plan.keys, cfg, plan.n_super_tiles)
    sg_progs = {c["id"]: loadsg_program([(b["key"], b["rows"], b["c_res"]) for b in c["boxes"]], plan.keys, cfg)
                for c in cat["subgraphs"]}
    # ---- DRAM layout: [programs][SubGraph programs][weights][activations]
    addr = 0
    for s in plan.subnets.values():
        s["base"] = addr
        addr = _align(addr + len(s["low"].prog_image))
    sg_base = {}
    for k, raw in sg_progs.items():
        sg_base[k] = addr
        addr = _align(addr + len(raw))
    weight_base = addr
    act_base = _align(weight_base + n_tiles * T)
    act_bytes = max(s["low"].act_bytes for s in plan.subnets.values())
    total = act_base + act_bytes
    if total > 1 << 32:
        raise CompileError(f"the DRAM image needs {total} bytes, more than 32-bit addresses reach")
    wimg = bytearray(n_tiles * T)
    wimg[:plan.n_super_tiles * T] = plan.super_tiles.tobytes()
    for name, s in plan.subnets.items():
        low = lower(s["graph"], cfg, ext_tiles=s["ext"], tile_offset=s["tile_offset"],
                    bases=dict(prog_base=s["base"], weight_base=weight_base, act_base=act_base))
        if len(low.prog_image) != len(s["low"].prog_image) or low.n_tiles != s["n_private"]:
            raise CompileError(f"internal: SubNet '{name}' lowered differently in the second pass")
        o = s["tile_offset"] * T
        wimg[o:o + len(low.weight_image)] = low.weight_image
        s["low"] = low
        got = _tile_fetches(low)
        if got != fetches[name]:
            raise CompileError(f"internal: SubNet '{name}' tile set changed in the second pass")
    log(f"{len(plan.subnets)} programs, {n_tiles} tiles ({plan.n_super_tiles} SuperNet + "
        f"{n_tiles - plan.n_super_tiles} private), {len(cat['subgraphs'])} SubGraphs")

    out_dir = Path(out_dir)
    tmp = staging_dir(out_dir)
    try:
        src = Path(supernet_onnx)
        shutil.copyfile(src, tmp / "model.onnx")
        shutil.copyfile(manifest_path, tmp / "subnets.json")
        (tmp / "weights.bin").write_bytes(bytes(wimg))
        programs = {}
        sum_private_bytes = 0
        for name, s in plan.subnets.items():
            low, g, e = s["low"], s["graph"], s["entry"]
            fname = f"program_{name}.bin"
            (tmp / fname).write_bytes(low.prog_image)
            ids = sorted(fetches[name])
            programs[name] = {
                "file": fname, "base": s["base"], "bytes": len(low.prog_image), "n_instrs": low.n_instrs,
                "records": {"offset": low.records_offset, "count": low.n_records}, "luts": low.n_luts,
                "macs": int(sum(L["macs"] for L in low.layers)),
                "input": _io(g.input_name, low.tensors[g.input], g.tensors[g.input].shape, s["scales"][g.input]),
                "output": _io(g.output_name, low.tensors[g.output], g.output_shape, s["scales"][g.output]),
                "layers": low.layers,
                "tensors": {k: {**v, "scale": float(s["scales"][k])} for k, v in low.tensors.items()},
                "subnet": {"accuracy": e.accuracy, "macs": e.macs, "weight_bytes": e.weight_bytes,
                           "onnx": str(e.onnx)},
                "tiles": {"used": len(ids), "fetches": int(sum(fetches[name].values())),
                          "shared": sum(1 for t in ids if t < plan.n_super_tiles),
                          "private": [s["tile_offset"], s["n_private"]], "runs": [list(r) for r in runs_of(ids)]},
            }
            sum_private_bytes += len(ids) * T
        subgraphs = {}
        for c in cat["subgraphs"]:
            fname = f"subgraph_{c['id']}.bin"
            (tmp / fname).write_bytes(sg_progs[c["id"]])
            c["file"], c["base"] = fname, sg_base[c["id"]]
            subgraphs[c["id"]] = {"file": fname, "base": sg_base[c["id"]], "bytes": len(sg_progs[c["id"]]),
                                  "tiles": c["tiles"], "boxes": c["boxes"], "subnets": c["subnets"]}
        (tmp / CATALOG_FILE).write_text(json.dumps(cat, indent=1))
        (tmp / SHARE_FILE).write_text(json.dumps(plan.share_report, indent=1))
        (tmp / SHARE_SUMMARY).write_text(_share_summary(plan.share_report, plan))
        n_sh = sum(v["shared"] for v in plan.share_report["subnets"].values())
        n_pr = sum(v["private"] for v in plan.share_report["subnets"].values())
        largest = max(plan.subnets, key=lambda k: plan.subnets[k]["entry"].macs)
        manifest = {
            "format": FORMAT, "version": 2, "generator": "sushi.compiler.supernet",
            "source": {"file": "model.onnx", "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                       "graph": plan.super_model.graph.name, "subnets": "subnets.json"},
            "accel": cfg.to_json(),
            "memory": {"prog_base": 0, "weight_base": weight_base, "act_base": act_base, "act_bytes": act_bytes,
                       "total_bytes": total, "align": 64},
            "weights": {"file": "weights.bin", "n_tiles": n_tiles, "bytes": len(wimg), "tile_bytes": T},
            "programs": programs,
            "default_program": largest,
            "supernet": {"onnx": "model.onnx", "tiles": plan.n_super_tiles,
                         "private_tiles": n_tiles - plan.n_super_tiles,
                         "layers": {k: {kk: v[kk] for kk in ("first", "count", "dw", "kh", "kw", "cin_w", "groups",
                                                          "sg", "sky", "skx", "shape")}
                                    for k, v in plan.super_layout.items()},
                         "tensors_shared": n_sh, "tensors_private": n_pr,
                         "weight_image_bytes": len(wimg),
                         "sum_subnet_tile_bytes": sum_private_bytes},
            "residency_keys": {str(k): v for k, v in plan.keys.items()},
            "share": {"file": SHARE_FILE, "summary": SHARE_SUMMARY},
            "catalog": {"file": CATALOG_FILE, "ids": [c["id"] for c in cat["subgraphs"]]},
            "subgraphs": subgraphs,
            "calibration": plan.calibration,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir} ({total} DRAM bytes)")
    return (manifest, plan) if return_plan else manifest


# ------------------------------------------------------------------ verification jobs

def verify_steps(out_dir, subnet: str, resident=None, inputs=None, swap=None) -> list:
    """The job list of ``sushi verify OUT --subnet NAME [--resident ID]``: steps
    [query (nothing resident)], then, with ``resident``: [load SubGraph, query], and with ``swap``
    (another SubGraph id): [load swap, query].  Every step: dict(kind "query" | "loadsg", label,
    image (bytes: the build's DRAM image with the input written), prog_base, weight_base,
    read_back [(addr, n)] (the output tensor for queries)).  ``inputs``: float NCHW input (default:
    a fixed-seed random one).  Run them in order on ONE accelerator state (golden: run_steps_golden;
    RTL: sim.rtl.RtlSim.run_jobs(steps_to_rtl_jobs(steps)))."""
    from sushi.artifacts import load_build
    b = load_build(out_dir)
    p = b.program(subnet)
    if inputs is None:
        inputs = np.random.default_rng(0).standard_normal(p["input"]["shape"]).astype(np.float32)
    img, pb, wb = b.dram_image(program=subnet)
    b.write_input(img, b.quantize_input(inputs, program=subnet), program=subnet)
    img = bytes(img)
    out = b.output_region(program=subnet)
    q = lambda label: dict(kind="query", label=label, image=img, prog_base=pb, weight_base=wb,  # noqa: E731
                           read_back=[out], subnet=subnet)
    steps = [q(f"{subnet} (nothing resident)")]
    for sgid in [r for r in (resident, swap) if r is not None]:
        sgb = b.subgraph(sgid)["base"]
        steps.append(dict(kind="loadsg", label=f"load SubGraph {sgid}", image=img, prog_base=sgb,
                          weight_base=wb, read_back=[], subgraph=sgid))
        steps.append(q(f"{subnet} (SubGraph {sgid} resident)"))
    return steps


def run_steps_golden(steps, cfg, gm=None) -> list:
    """Run steps on one GoldenModel (PB state carries over) -> [{counters, regions}]."""
    from sim.golden import GoldenModel
    gm = gm or GoldenModel(cfg)
    res = []
    for st in steps:
        dram = bytearray(st["image"])
        c = gm.run(dram, st["prog_base"], st["weight_base"])
        res.append(dict(counters=c.as_dict(), regions=[bytes(dram[a:a + n]) for a, n in st["read_back"]]))
    return res


def steps_to_rtl_jobs(steps) -> list:
    from sim.rtl import Job
    return [Job(dram_image=st["image"], prog_base=st["prog_base"], weight_base=st["weight_base"],
                read_back=list(st["read_back"])) for st in steps]


def verify_subnet(out_dir, subnet: str, resident=None, swap=None, rtl: bool = False, inputs=None,
                  rtl_kwargs=None) -> dict:
    """Run verify_steps on the golden model (and the Verilator RTL with ``rtl``) and check:
    the query outputs are the same bytes cold, resident and after a swap; a resident query's DRAM
    weight bytes are lower by exactly pb_hits * tile_bytes; RTL == golden for every byte and counter.
    -> {"ok": bool, "problems": [str], "steps": [{label, kind, golden: counters, rtl: counters|None}]}"""
    from sushi.artifacts import load_build
    from sim.golden import COUNTER_NAMES
    b = load_build(out_dir)
    steps = verify_steps(out_dir, subnet, resident=resident, inputs=inputs, swap=swap)
    gold = run_steps_golden(steps, b.cfg)
    problems = []
    T = b.cfg.tile_bytes
    cold = gold[0]
    for st, g in zip(steps, gold):
        if g["counters"]["error"]:
            problems.append(f"{st['label']}: error {g['counters']['error']}")
        if st["kind"] == "query" and g is not cold:
            if g["regions"] != cold["regions"]:
                problems.append(f"{st['label']}: output differs from the cold query")
            d = cold["counters"]["w_rd_bytes"] - g["counters"]["w_rd_bytes"]
            if d != g["counters"]["pb_hits"] * T:
                problems.append(f"{st['label']}: DRAM weight bytes lower by {d}, pb_hits * tile_bytes = "
                                f"{g['counters']['pb_hits'] * T}")
    rres = [None] * len(steps)
    if rtl:
        from sim.rtl import RtlSim
        dram = 1 << max(16, (int(b.memory["total_bytes"]) - 1).bit_length())
        rres = RtlSim(b.cfg, dram_bytes=dram, **(rtl_kwargs or {})).run_jobs(steps_to_rtl_jobs(steps))
        for st, g, r in zip(steps, gold, rres):
            if r.timed_out:
                problems.append(f"{st['label']}: RTL timed out")
            if r.regions != g["regions"]:
                problems.append(f"{st['label']}: RTL output bytes differ from the golden model")
            for k in COUNTER_NAMES + ("error",):
                if r.counters[k] != g["counters"][k]:
                    problems.append(f"{st['label']}: counter {k}: RTL {r.counters[k]}, golden {g['counters'][k]}")
    return {"ok": not problems, "problems": problems,
            "steps": [dict(label=st["label"], kind=st["kind"], golden=g["counters"],
                           rtl=(None if r is None else {k: r.counters[k] for k in COUNTER_NAMES + ("cycles", "error")}))
                      for st, g, r in zip(steps, gold, rres)]}

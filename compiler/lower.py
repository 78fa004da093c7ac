"""Lowering of the quantized IR to SUSHI ISA v4 (LUT, MUL, PBKEY used; LOADSG/SETRES are the runtime's): weight tiles, requantization records, DRAM layout
[program image = instructions, records][weight image][activation tensors], banded activation tiling."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sushi.config import AccelConfig
from sushi.isa import INSTR_BYTES, LUT_BYTES, PARAM_BYTES, IsaError, Op, encode, pack_params

from .errors import CompileError
from .ir import Graph, Node, ew_describe
from .quantize import lut_bytes

__all__ = ["Lowered", "lower", "legalize", "pack_dense_tiles", "pack_dw_tiles", "ALIGN"]

ALIGN = 64       # every region and tensor starts on a 64-byte boundary (a multiple of any V)
MAX_GROUPS = (1 << 10) - 1


def _align(n: int, a: int = ALIGN) -> int:
    return -(-n // a) * a


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Lowered:
    prog_image: bytes
    weight_image: bytes
    n_instrs: int
    n_tiles: int
    records_offset: int           # byte offset of the records in the program image
    n_records: int
    prog_base: int
    weight_base: int
    act_base: int
    act_bytes: int
    tensors: dict                 # name -> {addr, hwc, c_words, bytes}
    layers: list = field(default_factory=list)
    n_luts: int = 0               # 256-byte LUT tables, stored after the records in the program image

    @property
    def total_bytes(self) -> int:
        return self.act_base + self.act_bytes


def pack_dense_tiles(Wq: np.ndarray, R: int, V: int, cin_w: int | None = None) -> np.ndarray:
    """[Cout, Cin, kh, kw] int8 -> tiles [G*kh*kw*cin_w, R, V]; tile ((g*kh+ky)*kw+kx)*cin_w + c holds
    W[g*R + r, c*V + j, ky, kx] at row r, column j."""
    co, ci, kh, kw = Wq.shape
    G, CW = _cdiv(co, R), cin_w or _cdiv(ci, V)
    Wp = np.zeros((G * R, CW * V, kh, kw), np.int8)
    Wp[:co, :ci] = Wq
    T = Wp.reshape(G, R, CW, V, kh, kw).transpose(0, 4, 5, 2, 1, 3)
    return np.ascontiguousarray(T).reshape(G * kh * kw * CW, R, V)


def pack_dw_tiles(Wq: np.ndarray, R: int, V: int, c_w: int | None = None) -> np.ndarray:
    """[C, 1, kh, kw] int8 -> tiles [cw*NT, R, V]; kernel position p = ky*kw+kx is row p % R of tile
    g*NT + p // R, column j is channel g*V + j."""
    c, _, kh, kw = Wq.shape
    P, CW = kh * kw, c_w or _cdiv(c, V)
    NT = _cdiv(P, R)
    Wp = np.zeros((CW * V, NT * R), np.int8)
    Wp[:c, :P] = Wq.reshape(c, P)
    T = Wp.reshape(CW, V, NT, R).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(T).reshape(CW * NT, R, V)


class _Emitter:
    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.instrs = []          # (Op, fields, layer name)

        self.key = None           # the PBKEY state of the program so far

    def add(self, op, layer, **f):
        self.instrs.append((op, f, layer))

    def pbkey(self, key, layer):
        """Select residency entry ``key`` (None: none) for the following CONVs; emitted on change."""
        if key != self.key and self.cfg.pb_tiles:
            self.add(Op.PBKEY, layer, key=key or 0, on=int(key is not None))
            self.key = key


def _records(bias, mult, shift, n):
    b = np.zeros(n, np.int64)
    m = np.zeros(n, np.int64)
    s = np.zeros(n, np.int64)
    b[:len(bias)], m[:len(mult)], s[:len(shift)] = bias, mult, shift
    return b, m, s


def _band_rows(label, H, in_row, out_row, OH, kh, sh, A, n_out=1):
    """The largest number of output rows whose input rows (with halo) and n_out copies of the output
    rows (2 when a LUT follows the CONV in the buffer) fit A words."""
    def need(b):
        return min(H, (b - 1) * sh + kh) * in_row + n_out * b * out_row
    if need(1) > A:
        extra = f" + {out_row} LUT output words" if n_out == 2 else ""
        raise CompileError(
            f"{label}: one output row needs {need(1)} activation-buffer words "
            f"({min(H, kh)} input rows x {in_row} + {out_row} output words{extra}) but act_buf_words is {A}")
    lo, hi = 1, OH
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= A:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _bands(OH, b, H, kh, sh, pt):
    """[(oy0, oy1, iy0, iy1, pad_top_band)] covering the output rows."""
    out = []
    for oy0 in range(0, OH, b):
        oy1 = min(OH, oy0 + b)
        lo = oy0 * sh - pt
        hi = (oy1 - 1) * sh - pt + kh
        iy0, iy1 = max(0, lo), min(H, hi)
        out.append((oy0, oy1, iy0, iy1, iy0 - lo))
    return out


def channel_words(g: Graph, R: int, V: int) -> dict:
    """Words per pixel of every tensor.  A dense CONV writes whole groups of R channels, so its output
    has a multiple of R/V words; ADD, POOL and depthwise CONV need the same layout on their inputs
    and output, so those tensors share one value (union-find), the largest any of them needs."""
    parent = {}

    def find(t):
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    def union(a, b):
        parent[find(a)] = find(b)

    need = {}
    for t, ten in g.tensors.items():
        find(t)
        need[t] = _cdiv(ten.chw[0], V)
    for n in g.nodes:
        if n.op == "conv" and not n.attrs.get("dw"):
            need[n.output] = _cdiv(g.tensors[n.output].chw[0], R) * (R // V)
        else:                       # add, pools, depthwise conv: same layout in and out
            for i in n.inputs:
                union(i, n.output)
    best = {}
    for t in g.tensors:
        r = find(t)
        best[r] = max(best.get(r, 0), need[t])
    return {t: best[find(t)] for t in g.tensors}


def legalize(g: Graph, cfg: AccelConfig) -> dict:
    """Rewrite what cannot be lowered as is on this configuration (before calibration, so the integer
    reference and the program agree): a global average pool whose whole input does not fit the
    activation buffer (it cannot be split into row bands: its kernel is the input) becomes a 1 x W
    pool (row bands of one row) and an H x 1 pool over the H x 1 row means -- exact in float, one more
    requantization.  Returns {rewrite: count}."""
    from .ir import Node, Tensor, infer_shapes
    R, V, A = cfg.pe_rows, cfg.pe_cols, cfg.act_buf_words
    cw = channel_words(g, R, V)
    count = 0
    for n in list(g.nodes):
        if n.op != "avgpool":
            continue
        C, H, W = g.tensors[n.inputs[0]].chw
        a = n.attrs
        if (a["kh"], a["kw"]) != (H, W) or any(a["pads"]) or H == 1 or W == 1:
            continue
        c = cw[n.inputs[0]]
        if H * W * c + c <= A:
            continue
        mid = f"{n.output}__rowmean"
        g.tensors[mid] = Tensor(mid, (C, H, 1), (1, C, H, 1))
        first = Node(f"{n.name}/w", "avgpool", list(n.inputs), mid, n.src_op,
                     dict(kh=1, kw=W, sh=1, sw=1, pads=(0, 0, 0, 0), act=(-float("inf"), float("inf")), divisor=W))
        g.nodes.insert(g.nodes.index(n), first)
        n.inputs = [mid]
        a.update(kh=H, kw=1, divisor=H)
        count += 1
    if count:
        infer_shapes(g)
    return {"split_global_pool": count}


def lower(g: Graph, cfg: AccelConfig, log=None, *, ext_tiles=None, tile_offset: int = 0,
          bases=None) -> Lowered:
    """``ext_tiles`` {conv node name: {base, sg, sky, skx[, key]}}: that layer's tiles live elsewhere
    (a SuperNet weight image, compiler/supernet.py); the CONV descriptors name them and no tiles are
    emitted; with ``key`` the CONVs run with PBKEY = key (its residency entry, docs/isa.md) and
    every other CONV with none.  ``tile_offset``: the id of this graph's first own tile.  ``bases`` {prog_base,
    weight_base, act_base}: a fixed DRAM layout (several programs in one image) instead of the
    compact one; the caller guarantees the regions do not overlap."""
    R, V, A = cfg.pe_rows, cfg.pe_cols, cfg.act_buf_words
    ext_tiles = ext_tiles or {}
    RW = R // V
    log = log or (lambda *a: None)

    # ---- CONV -> LUT fusion: an ew node whose input is a CONV output used by nothing else runs on the
    # CONV's output band in the buffer (exact: the same int8 values; the intermediate is never stored)
    uses = {}
    for n in g.nodes:
        for i in n.inputs:
            uses[i] = uses.get(i, 0) + 1
    prod = {n.output: n for n in g.nodes}
    fused = {}                    # id(conv node) -> ew node
    fused_ew = set()
    for n in g.nodes:
        p = prod.get(n.inputs[0]) if n.op == "ew" else None
        if p is not None and p.op == "conv" and uses.get(p.output) == 1 and p.output != g.output:
            fused[id(p)] = n
            fused_ew.add(id(n))
    hidden = {p_out for p_out, n in ((n.inputs[0], n) for n in g.nodes if id(n) in fused_ew)}

    # ---- activation tensors in DRAM (offsets from act_base)
    tensors, off = {}, 0
    cwords = channel_words(g, R, V)
    order = [g.input] + [n.output for n in g.nodes]
    for t in order:
        if t in tensors or t in hidden:
            continue
        C, H, W = g.tensors[t].chw
        if H > 1023 or W > 1023:
            raise CompileError(f"tensor '{t}': spatial size {H}x{W} is not supported (at most 1023)")
        cw = cwords[t]
        nbytes = H * W * cw * V
        tensors[t] = dict(offset=off, hwc=[H, W, C], c_words=cw, bytes=nbytes)
        off = _align(off + nbytes)
    act_bytes = off

    em = _Emitter(cfg)
    tile_chunks, n_tiles = [], 0
    rec_chunks, rec_bytes, n_records = [], 0, 0
    layers = []

    def lname(n):
        return n.name

    def label(n):
        return f"layer '{n.name}' ({n.src_op})"

    lut_chunks = []

    def add_lut(table) -> tuple:
        nonlocal rec_bytes
        off = rec_bytes
        rec_chunks.append((off, lut_bytes(table)))
        rec_bytes = _align(rec_bytes + LUT_BYTES)
        lut_chunks.append(off)
        return ("rec", off)

    for n in g.nodes:
        if id(n) in fused_ew:
            continue
        q = n.attrs["q"]
        lut = fused.get(id(n))
        tin = [tensors[i] for i in n.inputs]
        tout = tensors[n.output if lut is None else lut.output]
        C, H, W = g.tensors[n.inputs[0]].chw
        Co, OH, OW = g.tensors[n.output].chw
        first_instr = len(em.instrs)
        first_tile = tile_offset + n_tiles
        ext = ext_tiles.get(n.name) if n.op == "conv" else None
        macs = 0
        cin_w, cout_w = tin[0]["c_words"], tout["c_words"]
        a = n.attrs
        if n.op == "conv":
            kh, kw, sh, sw = a["kh"], a["kw"], a["sh"], a["sw"]
            pt, pl = a["pads"][0], a["pads"][1]
            if kh > 255 or kw > 255:
                raise CompileError(f"{label(n)}: kernel {kh}x{kw} is larger than 255 "
                                   f"(for a Gemm: input spatial size)")
            dw = bool(a.get("dw"))
            if dw:
                NT = _cdiv(kh * kw, R)
                tiles = pack_dw_tiles(q["W"], R, V, cin_w) if ext is None else None
                n_groups, tile_sg, per_group, n_rec = cin_w, NT, NT, cin_w * V
                macs = OH * OW * Co * kh * kw
                tile_sky = tile_skx = 0
                rec_stride = V * PARAM_BYTES
            else:
                per_group = kh * kw * cin_w
                tiles = pack_dense_tiles(q["W"], R, V, cin_w) if ext is None else None
                n_groups, tile_sg, n_rec = _cdiv(Co, R), per_group, _cdiv(Co, R) * R
                macs = OH * OW * Co * C * kh * kw
                tile_sky, tile_skx = kw * cin_w, cin_w
                rec_stride = R * PARAM_BYTES
            if per_group > cfg.wbuf_tiles:
                raise CompileError(
                    f"{label(n)}: one group needs {per_group} weight tiles "
                    f"({'ceil(%d*%d/%d)' % (kh, kw, R) if dw else '%dx%dx%d' % (kh, kw, cin_w)}) "
                    f"but wbuf_tiles is {cfg.wbuf_tiles}")
            if ext is None:
                tile_chunks.append(tiles)
                n_tiles += len(tiles)
                tile_base0 = first_tile
            else:
                tile_base0, tile_sg = ext["base"], ext["sg"]
                if not dw:
                    tile_sky, tile_skx = ext["sky"], ext["skx"]
            rec_off = rec_bytes
            b, m, s = _records(q["bias"], q["mult"], q["shift"], n_rec)
            try:
                rec_chunks.append((rec_off, pack_params(b, m, s)))
            except IsaError as e:
                raise CompileError(f"{label(n)}: {e}") from None
            rec_bytes = _align(rec_bytes + n_rec * PARAM_BYTES)
            n_records += n_rec
            in_row, out_row = W * cin_w, OW * cout_w
            bsz = _band_rows(label(n), H, in_row, out_row, OH, kh, sh, A, 2 if lut is not None else 1)
            bands = _bands(OH, bsz, H, kh, sh, pt)
            out_base = max(iy1 - iy0 for _, _, iy0, iy1, _ in bands) * in_row
            lut_base = out_base + bsz * out_row
            lut_addr = add_lut(lut.attrs["q"]["table"]) if lut is not None else None
            for oy0, oy1, iy0, iy1, ptb in bands:
                em.add(Op.LOAD, label(n), buf_addr=0, n_words=(iy1 - iy0) * in_row,
                       dram_addr=("act", tin[0]["offset"] + iy0 * in_row * V))
                for g0 in range(0, n_groups, MAX_GROUPS):
                    g1 = min(n_groups, g0 + MAX_GROUPS)
                    # residency key (SuperNet layer box, docs/isa.md): only the chunk whose rows are
                    # counted from the layer's first group, and only while the row counter is exact
                    key = ext.get("key") if ext is not None else None
                    rows = (g1 - g0) * (1 if dw else kh * kw)
                    em.pbkey(key if (key is not None and g0 == 0 and rows <= 0xFFFF) else None, label(n))
                    em.add(Op.CONV, label(n), dw=int(dw), kh=kh, kw=kw, sh=sh, sw=sw, pad_top=ptb,
                           pad_left=pl, in_h=iy1 - iy0, in_w=W, out_h=oy1 - oy0, out_w=OW,
                           cin_w=cin_w, cout_w=cout_w, n_groups=g1 - g0, in_addr=0,
                           out_addr=out_base + (g0 if dw else g0 * RW),
                           clamp_lo=q["clamp_lo"], clamp_hi=q["clamp_hi"],
                           tile_base=tile_base0 + g0 * tile_sg, tile_sg=tile_sg,
                           tile_sky=tile_sky, tile_skx=tile_skx,
                           param_addr=("rec", rec_off + g0 * rec_stride))
                src = out_base
                if lut is not None:
                    em.add(Op.LUT, label(n), in_addr=out_base, out_addr=lut_base,
                           n_words=(oy1 - oy0) * out_row, lut_addr=lut_addr)
                    src = lut_base
                em.add(Op.STORE, label(n), buf_addr=src, n_words=(oy1 - oy0) * out_row,
                       dram_addr=("act", tout["offset"] + oy0 * out_row * V))
            op_name = "gemm" if a.get("gemm") else ("dwconv" if dw else "conv")
            extra = dict(kernel=[kh, kw], stride=[sh, sw], pads=list(a["pads"]), bands=len(bands),
                         groups=n_groups)
            if ext is not None:
                extra.update(shared=dict(base=tile_base0, sg=tile_sg, sky=tile_sky, skx=tile_skx,
                                         cin_w=cin_w, dw=int(dw), key=ext.get("key")))
            if lut is not None:
                extra.update(lut=ew_describe(lut.attrs["fn"]), lut_scale_in=float(q["s_out"]))
                q = dict(q, s_out=lut.attrs["q"]["s_out"], clamp_lo=-128, clamp_hi=127)
        elif n.op in ("maxpool", "avgpool"):
            kh, kw, sh, sw = a["kh"], a["kw"], a["sh"], a["sw"]
            pt, pl = a["pads"][0], a["pads"][1]
            in_row, out_row = W * cin_w, OW * cout_w
            bsz = _band_rows(label(n), H, in_row, out_row, OH, kh, sh, A)
            bands = _bands(OH, bsz, H, kh, sh, pt)
            out_base = max(iy1 - iy0 for _, _, iy0, iy1, _ in bands) * in_row
            for oy0, oy1, iy0, iy1, ptb in bands:
                em.add(Op.LOAD, label(n), buf_addr=0, n_words=(iy1 - iy0) * in_row,
                       dram_addr=("act", tin[0]["offset"] + iy0 * in_row * V))
                em.add(Op.POOL, label(n), mode=int(n.op == "avgpool"), kh=kh, kw=kw, sh=sh, sw=sw,
                       pad_top=ptb, pad_left=pl, in_h=iy1 - iy0, in_w=W, out_h=oy1 - oy0, out_w=OW,
                       c_w=cin_w, in_addr=0, out_addr=out_base, mult=q["mult"], shift=q["shift"],
                       clamp_lo=q["clamp_lo"], clamp_hi=q["clamp_hi"])
                em.add(Op.STORE, label(n), buf_addr=out_base, n_words=(oy1 - oy0) * out_row,
                       dram_addr=("act", tout["offset"] + oy0 * out_row * V))
            op_name = n.op
            extra = dict(kernel=[kh, kw], stride=[sh, sw], pads=list(a["pads"]), bands=len(bands))
        elif n.op == "add":
            total = H * W * cin_w
            same = n.inputs[0] == n.inputs[1]
            chunk = A // (2 if same else 3)
            if chunk < 1:
                raise CompileError(f"{label(n)}: act_buf_words {A} is too small for ADD")
            nb = 0
            for w0 in range(0, total, chunk):
                nw = min(chunk, total - w0)
                em.add(Op.LOAD, label(n), buf_addr=0, n_words=nw, dram_addr=("act", tin[0]["offset"] + w0 * V))
                b_addr = 0
                if not same:
                    b_addr = chunk
                    em.add(Op.LOAD, label(n), buf_addr=chunk, n_words=nw,
                           dram_addr=("act", tin[1]["offset"] + w0 * V))
                o_addr = chunk * (1 if same else 2)
                em.add(Op.ADD, label(n), a_addr=0, b_addr=b_addr, out_addr=o_addr, n_words=nw,
                       mult_a=q["mult_a"], mult_b=q["mult_b"], shift=q["shift"],
                       clamp_lo=q["clamp_lo"], clamp_hi=q["clamp_hi"])
                em.add(Op.STORE, label(n), buf_addr=o_addr, n_words=nw, dram_addr=("act", tout["offset"] + w0 * V))
                nb += 1
            op_name = "add"
            extra = dict(bands=nb)
        elif n.op == "ew":
            total = H * W * cin_w
            chunk = A // 2
            if chunk < 1:
                raise CompileError(f"{label(n)}: act_buf_words {A} is too small for LUT")
            lut_addr = add_lut(q["table"])
            nb = 0
            for w0 in range(0, total, chunk):
                nw = min(chunk, total - w0)
                em.add(Op.LOAD, label(n), buf_addr=0, n_words=nw, dram_addr=("act", tin[0]["offset"] + w0 * V))
                em.add(Op.LUT, label(n), in_addr=0, out_addr=chunk, n_words=nw, lut_addr=lut_addr)
                em.add(Op.STORE, label(n), buf_addr=chunk, n_words=nw, dram_addr=("act", tout["offset"] + w0 * V))
                nb += 1
            op_name = "lut"
            extra = dict(bands=nb, lut=ew_describe(a["fn"]))
        elif n.op == "chmul":
            cw = cin_w
            if tin[1]["c_words"] != cw or cout_w != cw:
                raise n.err(f"internal: channel words differ ({cw}, {tin[1]['c_words']}, {cout_w})")
            P = H * W
            npix = (A - cw) // (2 * cw)
            if npix < 1:
                raise CompileError(f"{label(n)}: one pixel needs {3 * cw} activation-buffer words "
                                   f"(gate, input, output) but act_buf_words is {A}")
            em.add(Op.LOAD, label(n), buf_addr=0, n_words=cw, dram_addr=("act", tin[1]["offset"]))
            nb = 0
            for p0 in range(0, P, npix):
                npx = min(npix, P - p0)
                em.add(Op.LOAD, label(n), buf_addr=cw, n_words=npx * cw,
                       dram_addr=("act", tin[0]["offset"] + p0 * cw * V))
                em.add(Op.MUL, label(n), a_addr=cw, b_addr=0, out_addr=cw + npix * cw, n_pix=npx, c_w=cw,
                       mult=q["mult"], shift=q["shift"], clamp_lo=q["clamp_lo"], clamp_hi=q["clamp_hi"])
                em.add(Op.STORE, label(n), buf_addr=cw + npix * cw, n_words=npx * cw,
                       dram_addr=("act", tout["offset"] + p0 * cw * V))
                nb += 1
            op_name = "mul"
            extra = dict(bands=nb)
        else:
            raise n.err(f"internal: IR op '{n.op}' reached lowering")
        out_name = n.output if lut is None else lut.output
        if lut is not None:
            n_name = f"{n.name}+{lut.name}"
        else:
            n_name = n.name
        layers.append(dict(
            name=n_name, op=op_name, src_op=n.src_op, inputs=list(n.inputs), output=out_name,
            in_shape=[C, H, W], out_shape=[Co, OH, OW], macs=int(macs),
            tiles=[first_tile, tile_offset + n_tiles - first_tile],
            instrs=[first_instr, len(em.instrs) - first_instr],
            clamp=[q["clamp_lo"], q["clamp_hi"]], scale_out=float(q["s_out"]), **extra))
    log(f"lowered {len(g.nodes)} layers to {len(em.instrs) + 1} instructions, {n_tiles} tiles")

    # ---- layout: [instructions + HALT][records] | weights | activations
    n_instrs = len(em.instrs) + 1
    prog_base = 0
    records_offset = _align(n_instrs * INSTR_BYTES)
    prog_len = records_offset + rec_bytes
    weight_base = _align(prog_base + prog_len)
    wbytes = n_tiles * cfg.tile_bytes
    act_base = _align(weight_base + wbytes)
    if bases is not None:
        prog_base, weight_base, act_base = bases["prog_base"], bases["weight_base"], bases["act_base"]
    if act_base + act_bytes > 1 << 32:
        raise CompileError(f"the DRAM image needs {act_base + act_bytes} bytes, more than 32-bit addresses reach")

    def resolve(v):
        if isinstance(v, tuple):
            kind, o = v
            return (act_base if kind == "act" else prog_base + records_offset) + o
        return v

    prog = bytearray(prog_len)
    for i, (op, f, layer) in enumerate(em.instrs):
        try:
            prog[i * INSTR_BYTES:(i + 1) * INSTR_BYTES] = encode(op, **{k: resolve(v) for k, v in f.items()})
        except IsaError as e:
            raise CompileError(f"{layer}: does not fit the instruction format: {e}") from None
    prog[(n_instrs - 1) * INSTR_BYTES:n_instrs * INSTR_BYTES] = encode(Op.HALT)
    for o, raw in rec_chunks:
        prog[records_offset + o:records_offset + o + len(raw)] = raw
    weights = (np.concatenate(tile_chunks).tobytes() if tile_chunks else b"")
    for t in tensors.values():
        t["addr"] = act_base + t.pop("offset")
    return Lowered(bytes(prog), weights, n_instrs, n_tiles, records_offset, n_records,
                   prog_base, weight_base, act_base, act_bytes, tensors, layers, n_luts=len(lut_chunks))

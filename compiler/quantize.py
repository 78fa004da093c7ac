"""int8 quantization: calibration, per-channel weights, per-tensor activations, mult/shift requantizers,
and the integer reference executor of the quantized IR (the exact arithmetic of docs/isa.md)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from sushi.isa import requant

from .errors import CompileError
from .ir import NO_ACT, Graph, _windows, ew_eval, run_float

__all__ = ["lut_table", "lut_bytes", "CalibrationWarning", "load_calibration", "default_calibration", "calibration_samples", "calibrate", "quantize", "mult_shift",
           "mult_shift_shared", "quantize_tensor", "run_int", "clamp_bounds"]

MULT_MAX = (1 << 16) - 1


class CalibrationWarning(UserWarning):
    """Compiling without calibration data."""

SHIFT_MAX = 63


def load_calibration(path, input_name: str, chw) -> np.ndarray:
    """An .npz whose array named like the model input (else its first array) is N x C x H x W."""
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as e:
        raise CompileError(f"calibration file {p}: cannot be read as .npz ({type(e).__name__}: {e})") from None
    if not hasattr(z, "files") or not z.files:
        raise CompileError(f"calibration file {p}: not an .npz archive with at least one array")
    key = input_name if input_name in z.files else z.files[0]
    x = np.asarray(z[key])
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(chw) or x.shape[0] < 1:
        raise CompileError(f"calibration file {p}: array '{key}' has shape {list(x.shape)}, "
                           f"expected N x {' x '.join(map(str, chw))}")
    if x.dtype.kind not in "fiu" or not np.all(np.isfinite(x)):
        raise CompileError(f"calibration file {p}: array '{key}' must be finite numbers")
    return x.astype(np.float32)


def default_calibration(chw, n=None, seed=0, warn=True) -> np.ndarray:
    size = int(np.prod(chw))
    if n is None:
        n = 8 if size <= 65536 else 1
    if warn:
        warnings.warn(f"no calibration data given; calibrating on {n} fixed-seed random input(s) "
                      f"(accuracy may suffer: pass calib=FILE.npz)", CalibrationWarning, stacklevel=3)
    return np.random.default_rng(seed).standard_normal((n, *chw)).astype(np.float32)


def calibration_samples(calib, chw, input_name: str, warn: bool = True):
    """Calibration inputs -> (N x C x H x W float32, info): ``calib`` is None (fixed-seed random
    inputs, with a CalibrationWarning when ``warn``), an array, or an .npz path."""
    if calib is None:
        x = default_calibration(chw, warn=warn)
        return x, {"source": "random", "seed": 0, "samples": len(x)}
    if isinstance(calib, np.ndarray):
        x = np.asarray(calib, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(chw):
            raise CompileError(f"calibration array has shape {list(x.shape)}, expected N x {' x '.join(map(str, chw))}")
        return x, {"source": "array", "samples": len(x)}
    x = load_calibration(calib, input_name, chw)
    return x, {"source": str(calib), "samples": len(x)}


def calibrate(g: Graph, samples: np.ndarray, chunk: int = 8) -> dict:
    """{tensor: scale} per-tensor symmetric int8 scales from the max |x| over the samples."""
    amax = {}
    prod = {n.output: n for n in g.nodes}
    for i in range(0, len(samples), chunk):
        with np.errstate(all="ignore"):
            vals = run_float(g, samples[i:i + chunk])
        for k, v in vals.items():
            m = float(np.max(np.abs(v))) if v.size else 0.0
            if not math.isfinite(m):
                where = prod[k].err("") if k in prod else CompileError(f"graph input '{k}': ")
                raise CompileError(f"{str(where)[:-1]} calibration produced non-finite values "
                                   f"(weights or inputs out of float range)".replace(":  ", ": "))
            amax[k] = max(amax.get(k, 0.0), m)
    scales = {}
    for k, m in amax.items():
        scales[k] = (m if m > 0 and math.isfinite(m) else 1.0) / 127.0
    # MaxPool cannot rescale: its output keeps its input's scale
    for n in g.nodes:
        if n.op == "maxpool":
            scales[n.output] = scales[n.inputs[0]]
    return scales


def mult_shift(M):
    """Ratios M >= 0 -> (mult < 2^16, shift < 64) with mult / 2^shift ~= M, as precise as possible."""
    M = np.atleast_1d(np.asarray(M, np.float64))
    mult = np.zeros(M.shape, np.int64)
    shift = np.zeros(M.shape, np.int64)
    pos = M > 0
    if np.any(pos):
        s = np.clip(np.floor(np.log2(MULT_MAX / M[pos])), 0, SHIFT_MAX).astype(np.int64)
        m = np.rint(M[pos] * np.exp2(s)).astype(np.int64)
        over = (m > MULT_MAX) & (s > 0)
        s[over] -= 1
        m[over] = np.rint(M[pos][over] * np.exp2(s[over])).astype(np.int64)
        mult[pos] = np.minimum(m, MULT_MAX)
        shift[pos] = s
    return mult, shift


def mult_shift_shared(Ms):
    """Several ratios with one shift (ADD): -> ([mult...], shift)."""
    Ms = [float(m) for m in Ms]
    top = max(Ms)
    s = 0 if top <= 0 else int(np.clip(math.floor(math.log2(MULT_MAX / top)), 0, SHIFT_MAX))
    mults = [int(np.rint(m * 2.0 ** s)) for m in Ms]
    while max(mults) > MULT_MAX and s > 0:
        s -= 1
        mults = [int(np.rint(m * 2.0 ** s)) for m in Ms]
    return [min(m, MULT_MAX) for m in mults], s


def quantize_tensor(x, scale) -> np.ndarray:
    """q = clip(rint(x / s), -128, 127)"""
    return np.clip(np.rint(np.asarray(x, np.float64) / scale), -128, 127).astype(np.int8)


def clamp_bounds(act, s_out):
    lo, hi = act
    qlo = -128 if lo == -math.inf else int(np.clip(np.rint(lo / s_out), -128, 127))
    qhi = 127 if hi == math.inf else int(np.clip(np.rint(hi / s_out), -128, 127))
    return qlo, max(qlo, qhi)


def lut_table(fn, s_in: float, s_out: float, lo: int = -128, hi: int = 127) -> np.ndarray:
    """The LUT of an element-wise function: int8 [256], entry q + 128 for every input code q in
    -128..127:  T[q] = clip(rint(f(q * s_in) / s_out), lo, hi)  (f evaluated in float64 where the
    expression allows, round half to even).  In DRAM it is stored indexed by the input byte read as
    unsigned: byte (q & 0xFF) = T[q] (:func:`lut_bytes`)."""
    q = np.arange(-128, 128, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = np.asarray(ew_eval(fn, (q * s_in).astype(np.float32)), np.float64)
    if not np.all(np.isfinite(y)):
        y = np.nan_to_num(y, nan=0.0, posinf=1e30, neginf=-1e30)
    return np.clip(np.rint(y / s_out), lo, hi).astype(np.int8)


def lut_bytes(table: np.ndarray) -> bytes:
    """int8 table indexed by q + 128 -> the 256 DRAM bytes indexed by (q & 0xFF)."""
    return np.roll(np.asarray(table, np.int8), -128).tobytes()


def _ratio(n, M):
    M = np.atleast_1d(np.asarray(M, np.float64))
    bad = ~np.isfinite(M) | (M > MULT_MAX)
    if np.any(bad):
        raise n.err(f"requantization scale ratio {float(M[bad][0]):g} cannot be represented "
                    f"(mult < 2^16, shift < 64): weights or activations out of range")
    return M


def quantize(g: Graph, scales: dict) -> None:
    """Attach integer parameters to every node as ``node.attrs['q']``."""
    for n in g.nodes:
        s_out = scales[n.output]
        lo, hi = clamp_bounds(n.attrs.get("act", NO_ACT), s_out)
        q = dict(clamp_lo=lo, clamp_hi=hi, s_out=s_out)
        if n.op == "conv":
            s_in = scales[n.inputs[0]]
            W = n.params["W"].astype(np.float64)
            cout = W.shape[0]
            amax = np.abs(W.reshape(cout, -1)).max(axis=1)
            s_w = np.where(amax > 0, amax / 127.0, 1.0)
            Wq = np.clip(np.rint(W / s_w[:, None, None, None]), -127, 127).astype(np.int8)
            bias = np.clip(np.rint(n.params["B"].astype(np.float64) / (s_in * s_w)), -(2 ** 31), 2 ** 31 - 1)
            mult, shift = mult_shift(_ratio(n, s_in * s_w / s_out))
            q.update(W=Wq, bias=bias.astype(np.int64), mult=mult, shift=shift, s_w=s_w)
        elif n.op == "add":
            (ma, mb), sh = mult_shift_shared(_ratio(n, np.array([scales[n.inputs[0]], scales[n.inputs[1]]]) / s_out))
            q.update(mult_a=ma, mult_b=mb, shift=sh)
        elif n.op == "avgpool":
            m, sh = mult_shift(_ratio(n, scales[n.inputs[0]] / (s_out * n.attrs["divisor"])))
            q.update(mult=int(m[0]), shift=int(sh[0]))
        elif n.op == "maxpool":
            q.update(mult=0, shift=0)
        elif n.op == "ew":
            q.update(table=lut_table(n.attrs["fn"], scales[n.inputs[0]], s_out, lo, hi))
        elif n.op == "chmul":
            m, sh = mult_shift(_ratio(n, scales[n.inputs[0]] * scales[n.inputs[1]] / s_out))
            q.update(mult=int(m[0]), shift=int(sh[0]))
        else:
            raise n.err(f"internal: IR op '{n.op}' reached quantization")
        n.attrs["q"] = q


# ---------------------------------------------------------------- integer reference

def _conv_int(n, x, oshape):
    a, q = n.attrs, n.attrs["q"]
    _, oh, ow = oshape
    W = q["W"].astype(np.float64)
    win = _windows(x.astype(np.float64), a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oh, ow, 0.0)
    if a.get("dw"):
        acc = np.einsum("nchwyx,cyx->nchw", win, W[:, 0], optimize=True)
    else:
        acc = np.einsum("nchwyx,ocyx->nohw", win, W, optimize=True)
    acc = np.rint(acc).astype(np.int64) + q["bias"][None, :, None, None]
    return requant(acc, q["mult"][None, :, None, None], q["shift"][None, :, None, None],
                   q["clamp_lo"], q["clamp_hi"])


def run_int(g: Graph, xq: np.ndarray) -> dict:
    """Execute the quantized IR with the integer semantics of docs/isa.md; xq int8 [N, C, H, W]."""
    vals = {g.input: np.asarray(xq, np.int64)}
    for n in g.nodes:
        a, q = n.attrs, n.attrs["q"]
        x = vals[n.inputs[0]]
        oshape = g.tensors[n.output].chw
        if n.op == "conv":
            y = _conv_int(n, x, oshape)
        elif n.op == "add":
            s = x * q["mult_a"] + vals[n.inputs[1]] * q["mult_b"]
            y = requant(s, 1, q["shift"], q["clamp_lo"], q["clamp_hi"])
        elif n.op == "maxpool":
            win = _windows(x, a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oshape[1], oshape[2], -(1 << 40))
            y = np.clip(win.max(axis=(4, 5)), q["clamp_lo"], q["clamp_hi"])
        elif n.op == "avgpool":
            win = _windows(x, a["kh"], a["kw"], a["sh"], a["sw"], a["pads"], oshape[1], oshape[2], 0)
            y = requant(win.sum(axis=(4, 5)), q["mult"], q["shift"], q["clamp_lo"], q["clamp_hi"])
        elif n.op == "ew":
            y = q["table"].astype(np.int64)[x + 128]
        elif n.op == "chmul":
            y = requant(x * vals[n.inputs[1]], q["mult"], q["shift"], q["clamp_lo"], q["clamp_hi"])
        else:
            raise n.err(f"internal: IR op '{n.op}' in the integer executor")
        vals[n.output] = y.astype(np.int64)
    return vals

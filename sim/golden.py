"""The golden model: an integer-exact numpy executor of SUSHI programs; it is the specification.

It runs a program image in a DRAM image exactly as docs/isa.md defines, on an activation buffer
of the configured size, and counts the events the RTL counts (DRAM bytes per class, PB hits and
misses, instructions, MAC cycles).  Products are computed in float64, which is exact here: every
partial sum of int8 x int8 products stays far below 2**53.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sushi import isa
from sushi.config import AccelConfig
from sushi.isa import Op

__all__ = ["GoldenModel", "Counters", "GoldenError", "wrap32", "COUNTER_NAMES"]

#: counters the RTL and the golden model both report, in CSR order (docs/isa.md)
COUNTER_NAMES = ("w_rd_bytes", "act_rd_bytes", "act_wr_bytes", "instr_rd_bytes",
                 "pb_hits", "pb_misses", "instrs", "mac_cycles")


class GoldenError(RuntimeError):
    """A program did something the ISA forbids (address out of range, bad geometry)."""


@dataclass
class Counters:
    w_rd_bytes: int = 0
    act_rd_bytes: int = 0
    act_wr_bytes: int = 0
    instr_rd_bytes: int = 0
    pb_hits: int = 0
    pb_misses: int = 0
    instrs: int = 0
    mac_cycles: int = 0
    error: int = 0
    #: the executed instructions, in order (the performance model reads them)
    trace: list = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("trace")
        return d


def wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 range (the hardware's 32-bit adders)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


class GoldenModel:
    """Executes programs of one AccelConfig.

    Like the hardware, it keeps state across :meth:`run` calls: the Persistent Buffer's contents
    and residency table persist from one program (query) to the next until LOADSG / SETRES change
    them; the PBKEY selection does not (every program starts with none).
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        self.R, self.V = cfg.pe_rows, cfg.pe_cols
        self.buf = np.zeros((cfg.act_buf_words, self.V), dtype=np.int8)
        self.pb = np.zeros((cfg.pb_tiles, self.R, self.V), dtype=np.int8)
        #: residency table: key -> (rows, c_res, slot) or None (SETRES)
        self.res_table: list = [None] * cfg.res_entries
        #: the entry the CONVs of the running program look up (PBKEY; None at every START)
        self.pb_key = None

    def resident_tiles(self) -> int:
        return sum(e[0] * e[1] for e in self.res_table if e)

    # ------------------------------------------------------------------ helpers
    def _words(self, addr: int, n: int, what: str) -> slice:
        if addr < 0 or n < 0 or addr + n > self.cfg.act_buf_words:
            raise GoldenError(f"{what}: activation buffer words [{addr}, {addr + n}) outside "
                              f"[0, {self.cfg.act_buf_words})")
        return slice(addr, addr + n)

    def _dram(self, dram, addr: int, n: int, what: str) -> np.ndarray:
        if addr % self.V:
            raise GoldenError(f"{what}: DRAM address {addr:#x} is not a multiple of {self.V}")
        if addr < 0 or addr + n > len(dram):
            raise GoldenError(f"{what}: DRAM bytes [{addr:#x}, {addr + n:#x}) outside the "
                              f"{len(dram):#x}-byte image")
        return np.frombuffer(memoryview(dram)[addr:addr + n], dtype=np.int8)

    def _tiles(self, dram, weight_base: int, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               c: Counters) -> np.ndarray:
        """Fetch a CONV's tiles by id (any shape) -> int8 array ids.shape + (R, V); counts PB/DRAM
        traffic.  ``rows``/``cols`` (ids' shape) are each tile's row index (fetch order) and
        column ``c``: with the PBKEY entry ``(n_rows, c_res, slot)`` a tile with ``row < n_rows``
        and ``c < c_res`` is read from PB slot ``slot + row*c_res + c``."""
        T = self.cfg.tile_bytes
        flat = ids.reshape(-1).astype(np.int64)
        if flat.size and flat.min() < 0:
            raise GoldenError("negative tile id")
        e = self.res_table[self.pb_key] if self.pb_key is not None else None
        if e:
            n_rows, c_res, s = e
            rr = np.minimum(rows.reshape(-1).astype(np.int64), 0xFFFF)     # the 16-bit row counter saturates
            cc = cols.reshape(-1).astype(np.int64)
            hit = (rr < n_rows) & (cc < c_res)
            slot = s + rr * c_res + cc
        else:
            hit = np.zeros(flat.shape, dtype=bool)
            slot = None
        c.pb_hits += int(hit.sum())
        c.pb_misses += int((~hit).sum())
        c.w_rd_bytes += int((~hit).sum()) * T
        out = np.empty((flat.size, self.R, self.V), dtype=np.int8)
        if hit.any():
            out[hit] = self.pb[slot[hit]]
        miss = flat[~hit]
        if miss.size:
            end = weight_base + (int(miss.max()) + 1) * T
            if end > len(dram):
                raise GoldenError(f"tile id {int(miss.max())} lies outside the DRAM image")
            wimg = np.frombuffer(memoryview(dram)[weight_base:end], dtype=np.int8).reshape(-1, T)
            out[~hit] = wimg[miss].reshape(-1, self.R, self.V)
        return out.reshape(*ids.shape, self.R, self.V)

    def _params(self, dram, addr: int, n: int, c: Counters):
        raw = self._dram(dram, addr, n * isa.PARAM_BYTES, "requant records")
        c.w_rd_bytes += n * isa.PARAM_BYTES
        return isa.unpack_params(raw.tobytes())

    @staticmethod
    def _padded(x: np.ndarray, ins, kh: int, kw: int, fill: float) -> np.ndarray:
        """Input band (H, W, C) placed in a frame with pad_top/pad_left and enough bottom/right."""
        H, W, C = x.shape
        Hp = max(H + ins.pad_top, (ins.out_h - 1) * ins.sh + kh)
        Wp = max(W + ins.pad_left, (ins.out_w - 1) * ins.sw + kw)
        p = np.full((Hp, Wp, C), fill, dtype=np.float64)
        p[ins.pad_top:ins.pad_top + H, ins.pad_left:ins.pad_left + W] = x
        return p

    @staticmethod
    def _window(p: np.ndarray, ins, ky: int, kx: int) -> np.ndarray:
        return p[ky:ky + (ins.out_h - 1) * ins.sh + 1:ins.sh, kx:kx + (ins.out_w - 1) * ins.sw + 1:ins.sw]

    # ------------------------------------------------------------------ ops
    def _conv(self, ins, dram, weight_base, c: Counters):
        R, V = self.R, self.V
        if ins.sh == 0 or ins.sw == 0 or ins.kh == 0 or ins.kw == 0:
            raise GoldenError("CONV: zero stride or kernel")
        x = self.buf[self._words(ins.in_addr, ins.in_h * ins.in_w * ins.cin_w, "CONV input")]
        x = x.reshape(ins.in_h, ins.in_w, ins.cin_w * V).astype(np.float64)
        p = self._padded(x, ins, ins.kh, ins.kw, 0.0)
        P = ins.out_h * ins.out_w
        g = np.arange(ins.n_groups)
        if not ins.dw:
            ky, kx, cc = np.arange(ins.kh), np.arange(ins.kw), np.arange(ins.cin_w)
            ids = (ins.tile_base + g[:, None, None, None] * ins.tile_sg + ky[None, :, None, None] * ins.tile_sky
                   + kx[None, None, :, None] * ins.tile_skx + cc[None, None, None, :])
            rows = np.broadcast_to(((g[:, None, None] * ins.kh + ky[None, :, None]) * ins.kw
                                    + kx[None, None, :])[..., None], ids.shape)
            cols = np.broadcast_to(cc[None, None, None, :], ids.shape)
            t = self._tiles(dram, weight_base, ids, rows, cols, c)   # (G, kh, kw, cin_w, R, V)
            w = t.transpose(0, 4, 1, 2, 3, 5).reshape(ins.n_groups * R, ins.kh, ins.kw, ins.cin_w * V)
            w = w.astype(np.float64)
            acc = np.zeros((P, ins.n_groups * R), dtype=np.float64)
            for a in range(ins.kh):
                for b in range(ins.kw):
                    acc += self._window(p, ins, a, b).reshape(P, -1) @ w[:, a, b, :].T
            n_out = ins.n_groups * R
            c.mac_cycles += ins.n_groups * P * ins.kh * ins.kw * ins.cin_w
            if ins.n_groups * (R // V) > ins.cout_w:
                raise GoldenError(f"CONV: {ins.n_groups} groups of {R} channels exceed cout_w={ins.cout_w} words")
        else:
            if ins.n_groups > ins.cin_w or ins.n_groups > ins.cout_w:
                raise GoldenError(f"CONV dw: n_groups={ins.n_groups} exceeds cin_w/cout_w "
                                  f"({ins.cin_w}/{ins.cout_w})")
            K = ins.kh * ins.kw
            NT = -(-K // R)
            ids = ins.tile_base + g[:, None] * ins.tile_sg + np.arange(NT)[None, :]
            rows = np.broadcast_to(g[:, None], ids.shape)
            cols = np.broadcast_to(np.arange(NT)[None, :], ids.shape)
            t = self._tiles(dram, weight_base, ids, rows, cols, c)   # (G, NT, R, V)
            w = t.reshape(ins.n_groups, NT * R, V)[:, :K, :]      # (G, K, V)
            w = w.transpose(1, 0, 2).reshape(K, ins.n_groups * V).astype(np.float64)
            n_out = ins.n_groups * V
            acc = np.zeros((P, n_out), dtype=np.float64)
            for a in range(ins.kh):
                for b in range(ins.kw):
                    acc += self._window(p, ins, a, b).reshape(P, -1)[:, :n_out] * w[a * ins.kw + b]
            c.mac_cycles += ins.n_groups * P * K
        bias, mult, shift = self._params(dram, ins.param_addr, n_out, c)
        y = isa.requant(wrap32(wrap32(acc.astype(np.int64)) + bias), mult, shift, ins.clamp_lo, ins.clamp_hi)
        self._store_pixels(ins.out_addr, ins.out_h * ins.out_w, ins.cout_w, y.astype(np.int8))

    def _store_pixels(self, out_addr: int, P: int, stride_w: int, y: np.ndarray):
        """Write y (P, n_words*V) to words out_addr + p*stride_w + [0, n_words)."""
        V = self.V
        nw = y.shape[1] // V
        self._words(out_addr, (P - 1) * stride_w + nw, "output")
        idx = out_addr + np.arange(P)[:, None] * stride_w + np.arange(nw)[None, :]
        self.buf[idx] = y.reshape(P, nw, V)

    def _pool(self, ins, c: Counters):
        V = self.V
        if ins.sh == 0 or ins.sw == 0 or ins.kh == 0 or ins.kw == 0:
            raise GoldenError("POOL: zero stride or kernel")
        x = self.buf[self._words(ins.in_addr, ins.in_h * ins.in_w * ins.c_w, "POOL input")]
        x = x.reshape(ins.in_h, ins.in_w, ins.c_w * V).astype(np.float64)
        P = ins.out_h * ins.out_w
        if ins.mode == 0:
            p = self._padded(x, ins, ins.kh, ins.kw, -1e9)
            r = np.full((ins.out_h, ins.out_w, ins.c_w * V), -1e9)
            for a in range(ins.kh):
                for b in range(ins.kw):
                    r = np.maximum(r, self._window(p, ins, a, b))
            if (r < -128).any():
                raise GoldenError("POOL max: a window holds no valid input position")
            y = np.clip(r.astype(np.int64), ins.clamp_lo, ins.clamp_hi)
        else:
            p = self._padded(x, ins, ins.kh, ins.kw, 0.0)
            s = np.zeros((ins.out_h, ins.out_w, ins.c_w * V))
            for a in range(ins.kh):
                for b in range(ins.kw):
                    s += self._window(p, ins, a, b)
            y = isa.requant(s.astype(np.int64), ins.mult, ins.shift, ins.clamp_lo, ins.clamp_hi)
        self._store_pixels(ins.out_addr, P, ins.c_w, y.reshape(P, -1).astype(np.int8))

    def _add(self, ins, c: Counters):
        n = ins.n_words
        a = self.buf[self._words(ins.a_addr, n, "ADD a")].astype(np.int64)
        b = self.buf[self._words(ins.b_addr, n, "ADD b")].astype(np.int64)
        y = isa.requant(a * ins.mult_a + b * ins.mult_b, 1, ins.shift, ins.clamp_lo, ins.clamp_hi)
        self.buf[self._words(ins.out_addr, n, "ADD out")] = y.astype(np.int8)

    def _loadsg(self, ins, dram, weight_base, c: Counters) -> bool:
        if ins.pb_slot + ins.n_tiles > self.cfg.pb_tiles:
            c.error = 3
            return False
        T = self.cfg.tile_bytes
        raw = self._dram(dram, weight_base + ins.tile_lo * T, ins.n_tiles * T, "LOADSG")
        self.pb[ins.pb_slot:ins.pb_slot + ins.n_tiles] = raw.reshape(-1, self.R, self.V)
        c.w_rd_bytes += ins.n_tiles * T
        return True

    def _setres(self, ins, c: Counters) -> bool:
        n = ins.rows * ins.c_res
        if ins.key >= self.cfg.res_entries or ins.pb_slot + n > self.cfg.pb_tiles:
            c.error = 3
            return False
        self.res_table[ins.key] = (ins.rows, ins.c_res, ins.pb_slot) if n else None
        return True

    def _pbkey(self, ins, c: Counters) -> bool:
        if ins.on and ins.key >= self.cfg.res_entries:
            c.error = 3
            return False
        self.pb_key = ins.key if ins.on else None
        return True

    def _lut(self, ins, dram, c: Counters):
        table = self._dram(dram, ins.lut_addr, isa.LUT_BYTES, "LUT table")
        c.w_rd_bytes += isa.LUT_BYTES
        x = self.buf[self._words(ins.in_addr, ins.n_words, "LUT in")]
        self.buf[self._words(ins.out_addr, ins.n_words, "LUT out")] = table[x.view(np.uint8)]

    def _mul(self, ins, c: Counters):
        n = ins.n_pix * ins.c_w
        a = self.buf[self._words(ins.a_addr, n, "MUL a")].astype(np.int64).reshape(ins.n_pix, ins.c_w, self.V)
        b = self.buf[self._words(ins.b_addr, ins.c_w, "MUL b")].astype(np.int64)
        y = isa.requant(a * b[None], ins.mult, ins.shift, ins.clamp_lo, ins.clamp_hi)
        self.buf[self._words(ins.out_addr, n, "MUL out")] = y.reshape(n, self.V).astype(np.int8)

    # ------------------------------------------------------------------ run
    def run(self, dram: bytearray, prog_base: int, weight_base: int, max_instrs: int = 10_000_000) -> Counters:
        """Execute the program at prog_base in place on ``dram``; returns the counters."""
        if not isinstance(dram, bytearray):
            raise TypeError("dram must be a bytearray (it is written in place)")
        V = self.V
        c = Counters()
        pc = prog_base
        self.pb_key = None
        while c.instrs < max_instrs:
            raw = bytes(self._dram(dram, pc, isa.INSTR_BYTES, f"instruction fetch at {pc:#x}"))
            c.instr_rd_bytes += isa.INSTR_BYTES
            c.instrs += 1
            pc += isa.INSTR_BYTES
            word = int.from_bytes(raw, "little")
            if word & 0xFF not in isa.Op._value2member_map_:
                c.error = 1
                return c
            ins = isa.decode(raw)
            if ins.op == Op.HALT:
                c.trace.append(ins)
                return c
            if ins.op == Op.LOAD:
                src = self._dram(dram, ins.dram_addr, ins.n_words * V, "LOAD")
                self.buf[self._words(ins.buf_addr, ins.n_words, "LOAD")] = src.reshape(-1, V)
                c.act_rd_bytes += ins.n_words * V
            elif ins.op == Op.STORE:
                self._dram(dram, ins.dram_addr, ins.n_words * V, "STORE")
                data = self.buf[self._words(ins.buf_addr, ins.n_words, "STORE")]
                dram[ins.dram_addr:ins.dram_addr + ins.n_words * V] = data.tobytes()
                c.act_wr_bytes += ins.n_words * V
            elif ins.op == Op.CONV:
                self._conv(ins, dram, weight_base, c)
            elif ins.op == Op.POOL:
                self._pool(ins, c)
            elif ins.op == Op.ADD:
                self._add(ins, c)
            elif ins.op == Op.LUT:
                self._lut(ins, dram, c)
            elif ins.op == Op.MUL:
                self._mul(ins, c)
            elif ins.op == Op.LOADSG:
                if not self._loadsg(ins, dram, weight_base, c):
                    return c
            elif ins.op == Op.SETRES:
                if not self._setres(ins, c):
                    return c
            elif ins.op == Op.PBKEY:
                if not self._pbkey(ins, c):
                    return c
            else:  # pragma: no cover - every opcode is handled above
                raise GoldenError(f"opcode {ins.op!r} has no semantics")
            c.trace.append(ins)
        raise GoldenError(f"no HALT within {max_instrs} instructions")

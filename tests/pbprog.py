"""Hand-written Persistent Buffer programs for the tests (ISA v4, docs/isa.md): layer boxes of a
CONV's tiles, their load programs (LOADSG runs + SETRES) and PBKEY insertion into a program."""
from sushi.isa import INSTR_BYTES, Op, decode, encode


def conv_tile(f, i: int, c: int) -> int:
    """Tile id of row ``i``, column ``c`` of CONV fields ``f`` (rows counted over the instruction)."""
    if f["dw"]:
        return f["tile_base"] + i * f["tile_sg"] + c
    K = f["kh"] * f["kw"]
    g, p = divmod(i, K)
    ky, kx = divmod(p, f["kw"])
    return f["tile_base"] + g * f["tile_sg"] + ky * f["tile_sky"] + kx * f["tile_skx"] + c


def conv_shape(f, R: int) -> tuple:
    """(rows, columns) of a CONV's tiles on an array of ``R`` rows."""
    if f["dw"]:
        return f["n_groups"], -(-f["kh"] * f["kw"] // R)
    return f["n_groups"] * f["kh"] * f["kw"], f["cin_w"]


def box_load(f, key: int, rows: int, c_res: int, slot: int, used_rows=None, used_cols=None) -> list:
    """LOADSG + SETRES instructions making entry ``key`` the box ``rows x c_res`` of CONV ``f``'s
    tiles at PB slot ``slot``.  Only rows < used_rows / columns < used_cols (default: all) are
    copied (the rest of the box is left as it is: a SuperNet box wider than the CONV); consecutive
    tile ids that land in consecutive slots share one LOADSG."""
    used_rows = rows if used_rows is None else min(rows, used_rows)
    used_cols = c_res if used_cols is None else min(c_res, used_cols)
    runs = []                      # [tile_lo, n, pb_slot]
    for i in range(used_rows):
        for c in range(used_cols):
            t, s = conv_tile(f, i, c), slot + i * c_res + c
            if runs and runs[-1][0] + runs[-1][1] == t and runs[-1][2] + runs[-1][1] == s:
                runs[-1][1] += 1
            else:
                runs.append([t, 1, s])
    return ([encode(Op.LOADSG, tile_lo=t, n_tiles=n, pb_slot=s) for t, n, s in runs]
            + [encode(Op.SETRES, key=key, rows=rows, c_res=c_res, pb_slot=slot)])


def pbkey(key) -> bytes:
    """PBKEY selecting ``key`` (None: none)."""
    return encode(Op.PBKEY, key=0 if key is None else key, on=int(key is not None))


def split(raw: bytes) -> list:
    """A program image -> its instructions (bytes) up to and including HALT."""
    out = []
    for a in range(0, len(raw), INSTR_BYTES):
        w = bytes(raw[a:a + INSTR_BYTES])
        out.append(w)
        if w[0] == Op.HALT:
            return out
    raise ValueError("no HALT")


def with_keys(instrs: list, keys) -> list:
    """Insert PBKEY instructions into ``instrs`` (bytes each) so that the k-th CONV runs with
    ``keys(k, fields)`` (a key or None); a PBKEY is emitted only when the selection changes."""
    out, cur, k = [], None, 0
    for w in instrs:
        if w[0] == Op.CONV:
            want = keys(k, decode(w).fields)
            if want != cur:
                out.append(pbkey(want))
                cur = want
            k += 1
        out.append(w)
    return out

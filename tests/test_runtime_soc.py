"""The host runtime end to end against the simulated SoC (Verilator): memory, a SubGraph, queries
bit-exact against the golden model, counters, and a fuzz of the link."""
import random
import struct
import time

import numpy as np
import pytest

from sushi import isa
from sushi.config import PRESETS
from sushi.runtime import Cmd, Code, Device, DeviceError, Program
from sushi.runtime.protocol import MAX_DATA, MAX_PAYLOAD, SYNC_REQ, encode_request

CFG = PRESETS["tiny-pb"]
MEM = 1 << 16
SCRATCH = 1 << 15          # fuzz writes go above this
TIMEOUT_CYCLES = 2000


@pytest.fixture(scope="module")
def dev():
    d = Device.open_sim(CFG, mem_bytes=MEM, timeout_cycles=TIMEOUT_CYCLES, timeout=60)
    yield d
    d.close()
    print("SoC simulation stats:", d.t.stats)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from compiler import compile_onnx
    from models import zoo
    from sushi.artifacts import load_build
    out = tmp_path_factory.mktemp("soc_net") / "tiny_cnn"
    compile_onnx(zoo.tiny_cnn(), CFG, out, progress=False)
    return load_build(out)


@pytest.mark.rtl
def test_status_identifies_the_accelerator(dev):
    s = dev.status()
    assert (s["pe_rows"], s["pe_cols"], s["isa_version"]) == (CFG.pe_rows, CFG.pe_cols, isa.ISA_VERSION)
    assert s["mem_bytes"] == MEM and s["max_payload"] == MAX_PAYLOAD and s["busy"] == 0


@pytest.mark.rtl
def test_memory_round_trip_aligned_unaligned_and_chunked(dev):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 700, dtype=np.uint8).tobytes()
    dev.write_mem(SCRATCH + 3, data)                  # unaligned, three frames
    assert dev.read_mem(SCRATCH + 3, len(data)) == data
    assert dev.read_mem(SCRATCH + 1, 5) == bytes(dev.read_mem(SCRATCH, 8)[1:6])
    with pytest.raises(DeviceError) as e:
        dev.request(Cmd.READ_MEM, struct.pack("<IH", MEM - 4, 8))
    assert e.value.code == Code.BAD_ADDRESS


@pytest.mark.rtl
def test_subgraph_and_queries_bit_exact_against_golden(dev, build):
    from dataclasses import replace

    from pbprog import box_load, conv_shape, split, with_keys
    from sim.golden import COUNTER_NAMES, GoldenModel
    from sushi.verify import make_inputs
    img, prog_base, weight_base = build.dram_image()
    # the SubGraph: a layer box of the main program's first CONV (key 0, as many rows as fit), one
    # load program after the image; the query: the main program with PBKEY 0 on for that layer
    raw = split(img[prog_base:])
    f0 = next(isa.decode(w).fields for w in raw if w[0] == isa.Op.CONV)
    rows, cols = conv_shape(f0, CFG.pe_rows)
    geom = lambda f: tuple(f[k] for k in ("dw", "tile_base", "tile_sg", "tile_sky", "tile_skx"))  # noqa: E731
    img = bytearray(img)
    at = {}
    for name, prog in (("sg", box_load(f0, 0, min(rows, CFG.pb_tiles // cols), cols, 0) + [isa.encode(isa.Op.HALT)]),
                       ("q", with_keys(raw, lambda k, f: 0 if geom(f) == geom(f0) else None))):
        at[name] = (len(img) + 63) // 64 * 64
        img += bytearray(at[name] - len(img)) + b"".join(prog)
    sg_base = at["sg"]
    t0 = time.perf_counter()
    dev.write_mem(0, bytes(img))
    load_s = time.perf_counter() - t0
    golden = GoldenModel(CFG)
    gimg = bytearray(img)
    gc = golden.run(gimg, sg_base, weight_base)
    c = dev.load_subgraph(sg_base, weight_base)
    assert c["error"] == 0 and c["w_rd_bytes"] == gc.w_rd_bytes > 0

    prog = replace(Program.from_build(build), prog_base=at["q"])
    (in_addr, in_n), = prog.inputs
    xs = make_inputs(build, 3, seed=0)
    t0 = time.perf_counter()
    for x in xs:
        scratch = bytearray(len(gimg))
        build.write_input(scratch, build.quantize_input(x[None]))
        inp = bytes(scratch[in_addr:in_addr + in_n])
        gimg[in_addr:in_addr + in_n] = inp
        g = golden.run(gimg, at["q"], weight_base)
        a, n = prog.outputs[0]
        res = dev.run(prog, inp)
        assert res.error == 0
        assert res.outputs[0] == bytes(gimg[a:a + n])          # bit-exact
        for k in COUNTER_NAMES:
            assert res.counters[k] == getattr(g, k), k
        assert res.counters["pb_hits"] > 0 and res.counters["cycles"] > 0
        cold = bytearray(gimg)                                 # the PB holds the layer's weights
        assert GoldenModel(CFG).run(cold, prog_base, weight_base).pb_hits == 0
        assert cold[a:a + n] == gimg[a:a + n]
    print(f"image {len(img)} B loaded in {load_s:.2f} s; 3 queries in {time.perf_counter() - t0:.2f} s")


def _fuzz_frames(rng: random.Random, n: int):
    """(kind, bytes, expected code, needs_idle) with needs_idle for frames answered after a timeout."""
    cmds = [int(c) for c in Cmd]
    out = []
    for _ in range(n):
        kind = rng.choice(["ok", "ok", "crc", "trunc", "over", "unknown", "len", "addr", "noise"])
        if kind == "ok":
            c = rng.choice(["status", "read", "write", "counters"])
            if c == "status":
                f = encode_request(Cmd.STATUS)
            elif c == "counters":
                f = encode_request(Cmd.READ_COUNTERS)
            elif c == "read":
                k = rng.randrange(0, MAX_DATA // 4 + 1) * 4
                f = encode_request(Cmd.READ_MEM, struct.pack("<IH", rng.randrange(0, (MEM - k) // 4 + 1) * 4, k))
            else:
                k = rng.randrange(0, MAX_DATA // 4 + 1) * 4
                a = SCRATCH + rng.randrange(0, (MEM - SCRATCH - k) // 4 + 1) * 4
                f = encode_request(Cmd.WRITE_MEM, struct.pack("<I", a) + rng.randbytes(k))
            out.append((kind, f, Code.OK, False))
        elif kind == "crc":
            f = bytearray(encode_request(Cmd.WRITE_MEM, struct.pack("<I", SCRATCH) + rng.randbytes(rng.randrange(0, 65) * 4)))
            i = rng.choice([1] + list(range(4, len(f))))     # not the sync or the length
            f[i] ^= 1 << rng.randrange(8)
            out.append((kind, bytes(f), Code.BAD_CRC, False))
        elif kind == "trunc":
            f = encode_request(Cmd.WRITE_MEM, struct.pack("<I", SCRATCH) + rng.randbytes(rng.randrange(0, 30) * 4))
            out.append((kind, f[:rng.randrange(1, len(f))], Code.TIMEOUT, True))
        elif kind == "over":
            n = rng.randrange(MAX_PAYLOAD + 1, 1 << 16)
            f = bytes([SYNC_REQ, rng.choice(cmds)]) + struct.pack("<H", n) + rng.randbytes(rng.randrange(0, 300))
            out.append((kind, f, Code.OVERSIZED, True))
        elif kind == "unknown":
            c = rng.choice([x for x in range(256) if x not in cmds])
            out.append((kind, encode_request(c, rng.randbytes(rng.randrange(0, MAX_PAYLOAD + 1))),
                        Code.UNKNOWN_CMD, False))
        elif kind == "len":
            f = rng.choice([encode_request(Cmd.STATUS, b"x"), encode_request(Cmd.READ_MEM, bytes(5)),
                            encode_request(Cmd.RUN, bytes(7)), encode_request(Cmd.WRITE_MEM, bytes(3)),
                            encode_request(Cmd.READ_MEM, struct.pack("<IH", 0, MAX_DATA + 4))])
            out.append((kind, f, Code.BAD_LENGTH, False))
        elif kind == "addr":
            f = rng.choice([encode_request(Cmd.READ_MEM, struct.pack("<IH", MEM, 4)),
                            encode_request(Cmd.READ_MEM, struct.pack("<IH", 2, 4)),
                            encode_request(Cmd.WRITE_MEM, struct.pack("<I", MEM - 4) + bytes(8)),
                            encode_request(Cmd.WRITE_MEM, struct.pack("<I", 0xFFFFFFFC) + bytes(8)),
                            encode_request(Cmd.WRITE_MEM, struct.pack("<I", SCRATCH) + bytes(6))])
            out.append((kind, f, Code.BAD_ADDRESS, False))
        else:       # line noise without a sync byte, then a good frame
            noise = bytes(b for b in rng.randbytes(rng.randrange(1, 40)) if b != SYNC_REQ)
            out.append((kind, noise + encode_request(Cmd.STATUS), Code.OK, False))
    return out


@pytest.mark.rtl
def test_fuzz_frames_get_one_reply_each_and_the_device_keeps_answering(dev):
    rng = random.Random(1234)
    frames = _fuzz_frames(rng, 1200)
    t0 = time.perf_counter()
    batch = []

    def flush():
        dev.send_raw(b"".join(f for _, f, _, _ in batch))
        for kind, f, code, _ in batch:
            r = dev.recv_reply(60, kind)
            assert r.code == code, (kind, f.hex(), r)
        batch.clear()

    counts = {}
    for kind, f, code, idle in frames:
        counts[kind] = counts.get(kind, 0) + 1
        if idle:            # answered only after the line has been quiet: alone
            flush()
            batch.append((kind, f, code, idle))
            flush()
        else:
            batch.append((kind, f, code, idle))
            if len(batch) >= 40:
                flush()
    flush()
    assert dev.status()["busy"] == 0            # still answering
    assert sum(counts.values()) >= 1000
    print(f"fuzz: {len(frames)} frames {counts} in {time.perf_counter() - t0:.1f} s")

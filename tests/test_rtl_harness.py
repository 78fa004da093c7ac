"""The RTL harness (sim/rtl.py, sim/tb_top.py, sim/dram_model.py) on LOAD/STORE/HALT programs.

Each RtlSim configuration is built once (cached) and its jobs run in one simulator process.
"""
import random
from fractions import Fraction
import time

import pytest

from sim.dram_model import DramModel, MIN_LATENCY
from sim.rtl import Job, RtlSim
from sushi.config import PRESETS
from sushi.isa import INSTR_BYTES, ISA_VERSION, Op, encode

CFG = PRESETS["8x8"]
V = CFG.pe_cols
SRC, DST = 0x4000, 0x10000


def copy_program(n_words: int, src: int = SRC, dst: int = DST, buf_addr: int = 0) -> bytes:
    return (encode(Op.LOAD, buf_addr=buf_addr, n_words=n_words, dram_addr=src)
            + encode(Op.STORE, buf_addr=buf_addr, n_words=n_words, dram_addr=dst)
            + encode(Op.HALT))


def image(prog: bytes, payload: bytes, src: int = SRC) -> bytes:
    img = bytearray(src + len(payload))
    img[:len(prog)] = prog
    img[src:] = payload
    return bytes(img)


def copy_job(n_words: int, seed: int, timeout: int = 1_000_000):
    data = random.Random(seed).randbytes(n_words * V)
    return Job(dram_image=image(copy_program(n_words), data), prog_base=0, weight_base=0,
               read_back=[(DST, n_words * V), (DST + n_words * V, V)], timeout_cycles=timeout), data


def check_copy(r, data, n_words):
    assert not r.timed_out
    assert r.regions[0] == data, "the copied block differs"
    assert r.regions[1] == bytes(V), "STORE wrote past its end"
    c = r.counters
    assert (c["done"], c["busy"], c["error"]) == (1, 0, 0)
    assert c["act_rd_bytes"] == c["act_wr_bytes"] == n_words * V
    assert c["instr_rd_bytes"] == INSTR_BYTES * 3
    assert c["instrs"] == 3
    assert c["w_rd_bytes"] == c["mac_cycles"] == c["pb_hits"] == c["pb_misses"] == 0
    # the DRAM model's own view of the traffic
    assert r.dram_rd_bytes == c["act_rd_bytes"] + c["instr_rd_bytes"] + c["w_rd_bytes"]
    assert r.dram_wr_bytes == c["act_wr_bytes"]
    assert not r.dram_addr_err
    assert c["hw_id"] == (ISA_VERSION << 24) | (CFG.pe_rows << 8) | V
    assert abs(r.sim_cycles - c["cycles"]) <= 2


@pytest.fixture(scope="module")
def fast_sim():
    return RtlSim(CFG, latency=MIN_LATENCY)


@pytest.mark.rtl
def test_load_store_copy(fast_sim):
    sizes = [1, 7, 64, 1000]
    jobs, datas = zip(*(copy_job(n, seed=n) for n in sizes))
    results = fast_sim.run_jobs(list(jobs))
    assert len(results) == len(sizes)
    for n, r, d in zip(sizes, results, datas):
        check_copy(r, d, n)


@pytest.mark.rtl
def test_unknown_opcode_sets_error_and_finishes(fast_sim):
    bad = bytes([0x77]) + bytes(INSTR_BYTES - 1)
    job_ok, data = copy_job(16, seed=5)
    jobs = [Job(dram_image=bad + encode(Op.HALT), prog_base=0, timeout_cycles=100_000), job_ok]
    r_bad, r_ok = fast_sim.run_jobs(jobs)
    assert not r_bad.timed_out
    assert r_bad.counters["error"] == 1
    assert r_bad.counters["done"] == 1 and r_bad.counters["busy"] == 0
    assert r_bad.dram_wr_bytes == 0
    check_copy(r_ok, data, 16)         # the accelerator restarts cleanly after an error


@pytest.mark.rtl
def test_prog_base_is_honoured(fast_sim):
    n = 32
    data = random.Random(9).randbytes(n * V)
    img = bytearray(image(b"", data))
    prog = copy_program(n)
    img[0x800:0x800 + len(prog)] = prog
    (r,) = fast_sim.run_jobs([Job(dram_image=bytes(img), prog_base=0x800, read_back=[(DST, n * V), (DST + n * V, V)])])
    check_copy(r, data, n)


@pytest.mark.rtl
def test_latency_and_bandwidth_cost_cycles(fast_sim):
    n = 512
    job, data = copy_job(n, seed=3)
    (fast,) = fast_sim.run_jobs([job])
    slow_lat = RtlSim(CFG, latency=200).run_jobs([job])[0]
    slow_bw = RtlSim(CFG, latency=MIN_LATENCY, bandwidth=2).run_jobs([job])[0]   # 2 B/cycle = 1/4 beat
    stalled = RtlSim(CFG, latency=MIN_LATENCY, stall_prob=0.5, seed=7).run_jobs([job])[0]
    for r in (fast, slow_lat, slow_bw, stalled):
        check_copy(r, data, n)
    c0 = fast.counters["cycles"]
    # 4 read commands (3 fetches + LOAD) each wait at least the extra latency
    assert slow_lat.counters["cycles"] >= c0 + 4 * (200 - MIN_LATENCY)
    # every byte moved takes >= 1/2 cycle at 2 bytes/cycle
    moved = slow_bw.dram_rd_bytes + slow_bw.dram_wr_bytes
    assert slow_bw.counters["cycles"] >= moved // 2 - 2 * V    # the credit starts full (2 beats)
    assert slow_bw.counters["cycles"] > 2 * c0
    assert stalled.counters["cycles"] > c0
    print(f"\ncopy of {n} words: {c0} cycles at latency {MIN_LATENCY}, {slow_lat.counters['cycles']} at "
          f"latency 200, {slow_bw.counters['cycles']} at 2 B/cycle, {stalled.counters['cycles']} with 50% stalls")


@pytest.mark.rtl
def test_bad_read_back_region_is_rejected(tmp_path):
    sim = RtlSim(CFG, work_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="outside the DRAM"):
        sim.run_jobs([Job(dram_image=b"", read_back=[(sim.dram_bytes, 8)])])


@pytest.mark.rtl
def test_timeout_is_reported_and_next_job_runs(fast_sim):
    # a LOAD of many words that cannot finish in 50 cycles
    job_slow, _ = copy_job(4000, seed=1, timeout=50)
    job_ok, data = copy_job(8, seed=2)
    r_slow, r_ok = fast_sim.run_jobs([job_slow, job_ok])
    assert r_slow.timed_out
    check_copy(r_ok, data, 8)


@pytest.mark.rtl
def test_sim_speed(fast_sim):
    """A long LOAD/STORE program runs correctly; prints simulated cycles per second (the speed
    target is measured by bench/run.py, not asserted in a timed unit test)."""
    n, reps = 4096, 200
    prog = b"".join(copy_program(n)[:2 * INSTR_BYTES] for _ in range(reps)) + encode(Op.HALT)
    data = random.Random(4).randbytes(n * V)
    t0 = time.perf_counter()
    (r,) = fast_sim.run_jobs([Job(dram_image=image(prog, data), read_back=[(DST, n * V)],
                                  timeout_cycles=100_000_000)])
    total = time.perf_counter() - t0
    assert r.regions[0] == data
    assert r.counters["act_rd_bytes"] == reps * n * V
    print(f"\n{r.sim_cycles} cycles in {r.wall_s:.2f} s: {r.cycles_per_s / 1e6:.2f} M cycles/s "
          f"(run_jobs total {total:.2f} s)")


def test_dram_model_argument_checks():
    with pytest.raises(ValueError, match=r"^'latency' must be an integer >= 3, not 2$"):
        DramModel(width_bytes=8, depth_words=1024, latency=2)
    with pytest.raises(ValueError, match=r"^'depth_words' must be a power of two, not 1000$"):
        DramModel(width_bytes=8, depth_words=1000)
    with pytest.raises(ValueError, match=r"^'bandwidth' must be positive bytes per cycle or None, not 0$"):
        DramModel(width_bytes=8, depth_words=1024, bandwidth=0)


def _dram_sim(latency, bandwidth=None, n=6):
    """amaranth.sim of a small DramModel: write n words, read them back; returns the trace."""
    from amaranth.sim import Simulator
    dut = DramModel(width_bytes=V, depth_words=256, latency=latency, bandwidth=bandwidth, mem="amaranth")
    words = [random.Random(11).getrandbits(8 * V) for _ in range(n)]
    out = {}

    async def tb(ctx):
        b = dut.bus
        ctx.set(b.wr_cmd.valid, 1)
        ctx.set(b.wr_cmd.addr, 0x40)
        ctx.set(b.wr_cmd.len, n)
        await ctx.tick().until(b.wr_cmd.ready)
        ctx.set(b.wr_cmd.valid, 0)
        for w in words:
            ctx.set(b.wr_data.valid, 1)
            ctx.set(b.wr_data.data, w)
            await ctx.tick().until(b.wr_data.ready)
        ctx.set(b.wr_data.valid, 0)
        await ctx.tick().repeat(4)
        ctx.set(b.rd_cmd.valid, 1)
        ctx.set(b.rd_cmd.addr, 0x40)
        ctx.set(b.rd_cmd.len, n)
        ctx.set(b.rd_data.ready, 1)
        cycle, t_acc, beats = 0, None, []
        while len(beats) < n:
            if ctx.get(b.rd_cmd.valid) and ctx.get(b.rd_cmd.ready):
                t_acc = cycle
            if ctx.get(b.rd_data.valid):
                beats.append((cycle, ctx.get(b.rd_data.data)))
            await ctx.tick()
            if t_acc is not None:
                ctx.set(b.rd_cmd.valid, 0)
            cycle += 1
        out.update(t_acc=t_acc, beats=beats, rd=ctx.get(dut.rd_bytes), wr=ctx.get(dut.wr_bytes))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return words, out


@pytest.mark.parametrize("latency", [MIN_LATENCY, 7, 30])
def test_dram_model_latency_is_exact(latency):
    words, out = _dram_sim(latency)
    first = out["beats"][0][0]
    assert first - out["t_acc"] == latency
    assert [c for c, _ in out["beats"]] == list(range(first, first + len(words)))   # full bandwidth
    assert [d for _, d in out["beats"]] == words
    assert out["rd"] == out["wr"] == len(words) * V


def test_dram_model_bandwidth_spaces_beats():
    words, out = _dram_sim(MIN_LATENCY, bandwidth=Fraction(V, 4))       # a beat every 4 cycles
    cycles = [c for c, _ in out["beats"]]
    assert [d for _, d in out["beats"]] == words
    gaps = [b - a for a, b in zip(cycles, cycles[1:])]
    assert all(g >= 1 for g in gaps) and sum(gaps[2:]) >= 4 * len(gaps[2:])   # after the 2-beat credit


@pytest.mark.rtl
def test_cached_build_is_slim_and_runs(tmp_path):
    """A fresh build entry keeps the simulator, not the compiler's intermediates (precompiled
    headers were 140 MB of each 150 MB entry), and a second RtlSim reuses it."""
    sim = RtlSim(CFG, latency=MIN_LATENCY, cache_dir=tmp_path / "cache")
    job, data = copy_job(8, seed=5)
    (r,) = sim.run_jobs([job])
    check_copy(r, data, 8)
    obj = sim.build_dir / "obj"
    assert not [f for p in ("*.gch", "*.o", "*.a", "*.d") for f in obj.glob(p)]
    assert sum(f.stat().st_size for f in sim.build_dir.rglob("*") if f.is_file()) < 30e6
    again = RtlSim(CFG, latency=MIN_LATENCY, cache_dir=tmp_path / "cache")
    (r2,) = again.run_jobs([job])
    assert again.build_dir == sim.build_dir
    check_copy(r2, data, 8)


def test_prune_cache_removes_least_recently_used(tmp_path):
    import os
    from sim.rtl import prune_cache
    now = 1_000_000.0
    entries = {}
    for i, (name, age_s) in enumerate([("a", 9000), ("b", 8000), ("c", 7000), ("d", 100), ("e", 9500)]):
        d = tmp_path / name
        d.mkdir()
        (d / "blob").write_bytes(bytes(1000))
        if name != "e":                       # 'e' never finished building: its dir mtime counts
            (d / "BUILD_OK").write_text("{}")
            os.utime(d / "BUILD_OK", (now - age_s, now - age_s))
        os.utime(d, (now - age_s, now - age_s))
        entries[name] = d
    (tmp_path / "gen-tmp").mkdir()              # another process's generation directory
    # 5 x ~1 kB; limit 2.5 kB: oldest first ('e', 'a', 'b'), 'd' is too recent to remove
    removed = prune_cache(tmp_path, keep=entries["c"], limit=2500, min_idle_s=3600, now=now)
    assert [p.name for p in removed] == ["e", "a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "d", "gen-tmp"]
    # everything left is either kept or recent: nothing more goes, even far over the limit
    assert prune_cache(tmp_path, keep=entries["c"], limit=0, min_idle_s=3600, now=now) == []


def test_cache_limit_is_checked(monkeypatch):
    from sim.rtl import RtlSimError, cache_limit_bytes
    monkeypatch.setenv("SUSHI_CACHE_MAX_MB", "lots")
    with pytest.raises(RtlSimError, match="SUSHI_CACHE_MAX_MB must be a number of megabytes, not 'lots'"):
        cache_limit_bytes()
    monkeypatch.setenv("SUSHI_CACHE_MAX_MB", "12.5")
    assert cache_limit_bytes() == 12_500_000

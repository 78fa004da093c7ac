"""Boards: SoC pieces in Amaranth's simulator, board builds without the tools, reports, deploy errors."""
import json

import pytest
from amaranth.sim import Simulator

from boards.build import BOARDS, BoardError, build, parse_nextpnr_log
from boards.link import UartRx, UartTx
from boards.top import ecp5_pll_params, ice40_pll_params
from sushi.config import PRESETS


def test_uart_tx_to_rx_loopback():
    from amaranth.hdl import Module
    m = Module()
    m.submodules.tx = tx = UartTx(8)
    m.submodules.rx = rx = UartRx(8)
    m.d.comb += rx.rx.eq(tx.tx)
    sent, got = [0x00, 0xA5, 0x5A, 0xFF, 0x13], []

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        for b in sent:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick()
            ctx.set(tx.i.valid, 0)
            for _ in range(200):
                await ctx.tick()
                if ctx.get(rx.o.valid):
                    got.append(ctx.get(rx.o.payload))
                    break

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent



def _registered_memory(m, mem, port, extra: int = 1):
    """``port`` (a memory port: addr, en, we, wdata, rdata) on ``mem`` with its read data registered
    ``extra`` times more: read latency 1 + extra (SushiSoC: 2 on the SPRAMs, 4 on the banked
    block RAM)."""
    from amaranth.hdl import Signal
    rp, wp = mem.read_port(), mem.write_port()
    rd = rp.data
    for _ in range(extra):
        r = Signal(len(rp.data))
        m.d.sync += r.eq(rd)
        rd = r
    m.d.comb += [rp.addr.eq(port.addr), rp.en.eq(port.en & ~port.we), wp.addr.eq(port.addr),
                 wp.data.eq(port.wdata), wp.en.eq(port.en & port.we), port.rdata.eq(rd)]


def _link_harness(V, words, timeout_cycles):
    """HostLink (read latency 2, like SushiSoC) + a memory with a register on its read data + a few
    fake CSRs (START keeps STATUS busy for a few cycles, then sets error = WEIGHT_BASE[7:0])."""
    from amaranth.hdl import Cat, Module, Signal
    from amaranth.lib.memory import Memory

    from boards.link import HostLink
    m = Module()
    m.submodules.link = link = HostLink(width_bytes=V, mem_words=words,
                                        timeout_cycles=timeout_cycles, read_latency=2)
    m.submodules.mem = mem = Memory(shape=8 * V, depth=words, init=[])
    _registered_memory(m, mem, link.mem)
    c = link.csr
    regs = {a: Signal(32, name=f"csr{a}") for a in (2, 3, 4)}
    busy, err, left = Signal(), Signal(8), Signal(4)
    with m.If(c.we & (c.addr == 2)):
        m.d.sync += regs[2].eq(c.wdata)
    with m.If(c.we & (c.addr == 3)):
        m.d.sync += regs[3].eq(c.wdata)
    with m.If(c.we & (c.addr == 0) & c.wdata[0] & ~busy):
        m.d.sync += [busy.eq(1), left.eq(9), regs[4].eq(0)]
    with m.If(busy):
        m.d.sync += [left.eq(left - 1), regs[4].eq(regs[4] + 1)]
        with m.If(left == 0):
            m.d.sync += [busy.eq(0), err.eq(regs[3][:8])]
    with m.Switch(c.addr):
        with m.Case(1):
            m.d.comb += c.rdata.eq(Cat(busy, Signal(7), err))
        for a, r in regs.items():
            with m.Case(a):
                m.d.comb += c.rdata.eq(r)
        with m.Case(13):
            m.d.comb += c.rdata.eq(0x01020304)
    return m, link


def test_host_link_frames_under_back_pressure():
    """Requests through HostLink with random rx / tx stalls: one reply per request, the codes of
    the protocol, memory written and read back, STATUS / RUN / READ_COUNTERS payloads."""
    import random
    import struct

    from sushi.runtime.protocol import (MAX_PAYLOAD, PROTO_VERSION, Cmd, Code, ReplyParser,
                                        SYNC_REQ, encode_request)
    V, words = 4, 64
    mem_bytes = V * words
    m, link = _link_harness(V, words, timeout_cycles=40)
    rng = random.Random(5)
    data = rng.randbytes(64)
    status = struct.pack("<IIII", 0, 0x01020304, mem_bytes, PROTO_VERSION | MAX_PAYLOAD << 16)
    batches = [  # (frames, [(code, payload or None)]); a truncated / oversized frame goes alone
        ([encode_request(Cmd.STATUS), encode_request(Cmd.WRITE_MEM, struct.pack("<I", 8) + data),
          encode_request(Cmd.READ_MEM, struct.pack("<IH", 8, 64)),
          encode_request(Cmd.READ_MEM, struct.pack("<IH", 12, 8)),
          encode_request(Cmd.WRITE_MEM, struct.pack("<I", mem_bytes - 4) + bytes(8)),
          encode_request(Cmd.READ_MEM, struct.pack("<IH", 2, 4)),
          encode_request(Cmd.READ_MEM, struct.pack("<IH", 0, 300)),
          encode_request(Cmd.STATUS, b"x"), encode_request(0x77),
          encode_request(Cmd.RUN, struct.pack("<II", 64, 0x2A)),
          encode_request(Cmd.READ_COUNTERS), encode_request(Cmd.WRITE_MEM, struct.pack("<I", 0))],
         [(Code.OK, status), (Code.OK, b""), (Code.OK, data), (Code.OK, data[4:12]),
          (Code.BAD_ADDRESS, b""), (Code.BAD_ADDRESS, b""), (Code.BAD_LENGTH, b""),
          (Code.BAD_LENGTH, b""), (Code.UNKNOWN_CMD, b""), (Code.OK, struct.pack("<II", 0x2A00, 10)),
          (Code.OK, None), (Code.OK, b"")]),
        ([bytes([SYNC_REQ, Cmd.WRITE_MEM, 8, 0, 1, 2])], [(Code.TIMEOUT, b"")]),
        ([bytes([SYNC_REQ, Cmd.STATUS, 0x10, 0x20]) + bytes(20)], [(Code.OVERSIZED, b"")]),
        ([b"\x00\x13" + encode_request(Cmd.STATUS)[:-1] + b"\x00"], [(Code.BAD_CRC, b"")]),
    ]
    replies = []

    async def bench(ctx):
        parser = ReplyParser()
        for frames, expect in batches:
            stream, i, n = b"".join(frames), 0, len(replies) + len(expect)
            for _ in range(20000):
                if len(replies) == n:
                    break
                on = i < len(stream) and rng.random() < 0.6
                ctx.set(link.rx.valid, on)
                ctx.set(link.rx.payload, stream[i] if on else 0)
                ready = rng.random() < 0.6
                ctx.set(link.tx.ready, ready)
                _, _, rx_ok, tv, tp = await ctx.tick().sample(link.rx.ready, link.tx.valid,
                                                              link.tx.payload)
                i += on and rx_ok
                if tv and ready:
                    replies.extend(parser.feed(bytes([tp])))
            assert i == len(stream) and len(replies) == n

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    got = [(r.code, r.payload) for r in replies]
    expect = [e for _, es in batches for e in es]
    assert got == [(c, got[k][1] if p is None else p) for k, (c, p) in enumerate(expect)]
    counters = struct.unpack("<11I", replies[10].payload)       # STATUS, CYCLES, 0 .. 0, HW_ID
    assert counters[:2] == (0x2A00, 10) and counters[-1] == 0x01020304


@pytest.mark.parametrize("out_reg,latency,depth", [(False, 2, 4), (True, 2, 4), (True, 4, 8)],
                         ids=["lat2", "lat2-out_reg", "lat4-out_reg-fifo8"])
def test_dram_bridge_with_registered_read_data_and_stalls(out_reg, latency, depth):
    """DramBridge on a memory whose read data is registered (latency 2: the iCE40 SoC's; 4 with
    an 8-deep read FIFO and the registered read-data output: the ECP5 SoC's): writes then reads
    of the same words back, the accelerator side stalling at random."""
    import random

    from amaranth.hdl import Module
    from amaranth.lib.memory import Memory

    from boards.memory import DramBridge
    V, words = 4, 128
    m = Module()
    m.submodules.br = br = DramBridge(width_bytes=V, addr_bits=7, read_latency=latency, out_reg=out_reg,
                                      fifo_depth=depth)
    m.submodules.mem = mem = Memory(shape=8 * V, depth=words, init=[])
    _registered_memory(m, mem, br.mem, extra=latency - 1)
    rng = random.Random(3)
    model, bad = [0] * words, []

    async def command(ctx, cmd, addr, n):
        ctx.set(cmd.addr, addr * V)
        ctx.set(cmd.len, n)
        ctx.set(cmd.valid, 1)
        while not (await ctx.tick().sample(cmd.ready))[2]:
            pass
        ctx.set(cmd.valid, 0)

    async def bench(ctx):
        for _ in range(40):
            a, n = rng.randrange(words), rng.choice([0, 1, 2, 7, 16, 17, 33])
            if rng.random() < 0.5:
                await command(ctx, br.wr_cmd, a, n)
                k = 0
                while k < n:
                    on, x = rng.random() < 0.7, rng.randrange(1 << 32)
                    ctx.set(br.wr_data.valid, on)
                    ctx.set(br.wr_data.data, x)
                    if on and (await ctx.tick().sample(br.wr_data.ready))[2]:
                        model[(a + k) % words] = x
                        k += 1
                    elif not on:
                        await ctx.tick()
                ctx.set(br.wr_data.valid, 0)
            else:
                await command(ctx, br.rd_cmd, a, n)
                k = 0
                while k < n:
                    ready = rng.random() < 0.6
                    ctx.set(br.rd_data.ready, ready)
                    _, _, v, d = await ctx.tick().sample(br.rd_data.valid, br.rd_data.data)
                    if v and ready:
                        if d != model[(a + k) % words]:
                            bad.append((a, k))
                        k += 1
                ctx.set(br.rd_data.ready, 0)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert bad == []


def test_pll_parameters_reach_the_targets():
    assert ice40_pll_params(12, 30) == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "f_out": 30.0}
    p = ecp5_pll_params(25, 100)
    assert p["f_out"] == 100.0 and 400 <= 100 * p["CLKOP_DIV"] <= 800


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_build_plan_without_tools(board, tmp_path):
    rep = build(board, None, tmp_path, do_build=False)
    assert rep["built"] is False and rep["preset"] == BOARDS[board].preset
    assert (tmp_path / "build" / "build_sushi_soc.sh").exists()
    assert json.loads((tmp_path / "report.json").read_text())["board"] == board


def test_placement_seed_reaches_nextpnr(tmp_path):
    """``seed`` goes to nextpnr's command line and into report.json; without one the board's
    (none: nextpnr's default and no ``--seed``); a non-integer seed is refused."""
    rep = build("ulx3s", None, tmp_path / "s7", do_build=False, seed=7)
    script = (tmp_path / "s7" / "build" / "build_sushi_soc.sh").read_text()
    assert rep["seed"] == 7 and "--seed 7" in script
    for board in BOARDS:
        rep = build(board, None, tmp_path / board, do_build=False)
        script = (tmp_path / board / "build" / "build_sushi_soc.sh").read_text()
        seed = BOARDS[board].seed
        assert rep["seed"] == seed
        assert (f"--seed {seed}" in script) if seed is not None else ("--seed" not in script)
    with pytest.raises(BoardError, match="'seed' must be an integer, not '2'"):
        build("ulx3s", None, tmp_path / "bad", do_build=False, seed="2")


def test_unknown_board_is_a_board_error(tmp_path):
    with pytest.raises(BoardError, match="unknown board 'zedboard'; boards: icebreaker, ulx3s"):
        build("zedboard", None, tmp_path)


LOG = """Info: Device utilisation:
Info: 	         ICESTORM_LC:  9493/ 5280   179%
Info: 	        ICESTORM_RAM:    13/   30    43%
Info: 	         ICESTORM_DSP:    22/    8   275%
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'ICESTORM_DSP'
Info: Max frequency for clock 'clk': 41.20 MHz (PASS at 30.00 MHz)
"""


def test_nextpnr_log_parsing_and_overflow_message():
    from boards.build import _overflow_message
    p = parse_nextpnr_log(LOG)
    assert p["utilization"]["ICESTORM_LC"] == (9493, 5280)
    assert p["fmax"] == [("clk", 41.2, True, 30.0)]
    msg = _overflow_message(BOARDS["icebreaker"], PRESETS["icebreaker"], p)
    assert msg == ("preset 'icebreaker' does not fit icebreaker: ICESTORM_LC 9493/5280 (179%), "
                   "ICESTORM_DSP 22/8 (275%) (from nextpnr's utilisation report)")


def test_deploy_without_a_build_is_a_clear_error(tmp_path):
    from boards.deploy import deploy
    with pytest.raises(BoardError, match="no report.json"):
        deploy("ulx3s", tmp_path)


def test_deploy_without_a_board_fails_fast_not_hangs(tmp_path):
    from boards.deploy import deploy
    bit = tmp_path / "sushi_soc.bit"
    bit.write_bytes(b"\0" * 16)
    (tmp_path / "report.json").write_text(json.dumps({"board": "ulx3s", "bitstream": str(bit)}))
    with pytest.raises(BoardError, match="programming the ulx3s failed|did not finish"):
        deploy("ulx3s", tmp_path, timeout=30)


def test_commands_register_build_and_deploy():
    import argparse
    from boards.commands import add_commands
    p = argparse.ArgumentParser()
    add_commands(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["build", "--board", "icebreaker", "-o", "x"])
    assert a.board == "icebreaker" and a.config is None and a.func.__name__ == "cmd_build"
    assert a.seed is None and p.parse_args(["build", "--board", "ulx3s", "-o", "x", "--seed", "3"]).seed == 3
    a = p.parse_args(["deploy", "--board", "ulx3s", "x"])
    assert a.out == "x" and a.func.__name__ == "cmd_deploy"


def _check_post_route_timing(rep):
    """report.json's post-route analysis (boards.sta on nextpnr's SDF) agrees with nextpnr's fmax
    and, when timing is missed, names the failing endpoints."""
    t = rep["timing"]
    assert abs(t["fmax_mhz"] - rep["fmax_mhz"]) <= 0.01 * rep["fmax_mhz"], (t["fmax_mhz"], rep["fmax_mhz"])
    assert (t["failing"] == 0) == rep["timing_met"]
    if t["failing"]:
        assert t["groups"][0]["ns"] == t["worst_ns"] and t["groups"][0]["endpoints"] >= 1


@pytest.mark.bitstream
@pytest.mark.ci_bitstream
@pytest.mark.xdist_group("ulx3s_bitstream")
def test_ulx3s_bitstream(tmp_path):
    """The ulx3s preset (8x8 array) places, routes and packs for the ECP5-85F (~8 min, part of
    the default suite and so of CI).  The 100 MHz target is not met yet: reported as xfail."""
    rep = build("ulx3s", None, tmp_path)
    u = rep["utilization"]
    assert rep["fits"] and rep["bitstream"] and rep["fmax_mhz"] > 0
    assert (tmp_path / "sushi_soc.bit").stat().st_size > 100_000
    assert 64 <= u["dsps"]["used"] <= 156 and u["brams"]["used"] <= 208 and u["luts"]["used"] <= 83640
    _check_post_route_timing(rep)
    if not rep["timing_met"]:
        g = rep["timing"]["groups"][0]
        pytest.xfail(f"fits and routes, but 100 MHz is not met ({rep['fmax_mhz']} MHz, "
                     f"{rep['timing']['failing']} failing endpoints; worst {g['signal']} <- {g['source']})")


@pytest.mark.bitstream
@pytest.mark.ci_bitstream
@pytest.mark.xdist_group("ice40_bitstream")
def test_icebreaker_bitstream_fits(tmp_path):
    """The icebreaker preset fits the iCE40UP5K (and should meet 30 MHz: docs/boards.md).  Part of
    the default suite (and so of CI): one real bitstream per change."""
    rep = build("icebreaker", None, tmp_path)
    u = rep["utilization"]
    assert rep["fits"] and rep["bitstream"] and rep["fmax_mhz"] > 0
    assert u["lcs"]["used"] <= 5280 and u["dsps"]["used"] <= 8
    _check_post_route_timing(rep)
    if not rep["timing_met"]:
        pytest.xfail(f"fits, but 30 MHz is not met ({rep['fmax_mhz']} MHz; it was 30.40 at the "
                     "session-5 RTL): see the critical path in build/nextpnr_report.json")


def test_icebreaker_preset_leaves_out_what_does_not_fit():
    ib = PRESETS["icebreaker"]
    assert (ib.pe_rows, ib.pe_cols, ib.pb_tiles) == (2, 2, 0)
    assert ib.op_maxpool and not (ib.op_avgpool or ib.op_add or ib.op_mul or ib.op_lut)
    assert BOARDS["icebreaker"].bram_memories == ("pmem",)


def test_small_board_config_fields():
    """dram_addr_bits / perf_counters (docs/boards.md): the iCEBreaker preset narrows its DRAM
    addresses to its 128 KiB and keeps only CYCLES; the defaults keep the full ISA widths."""
    from dataclasses import replace
    from rtl.csr import CSR_MAP, CsrBlock
    from sushi.config import AccelConfig, ConfigError
    assert AccelConfig().dram_addr_bits == 32 and AccelConfig().perf_counters is True
    ib = PRESETS["icebreaker"]
    assert ib.dram_addr_bits == 17 and ib.perf_counters is False and ib.tile_id_bits == 15
    assert PRESETS["ulx3s"].tile_id_bits == 24
    for bad in (11, 33, True, "17"):
        with pytest.raises(ConfigError, match="dram_addr_bits"):
            replace(ib, dram_addr_bits=bad)
    with pytest.raises(ConfigError, match="perf_counters"):
        replace(ib, perf_counters=1)
    dut = CsrBlock(ib)

    async def bench(ctx):
        ctx.set(dut.bus.addr, CSR_MAP["PROG_BASE"]); ctx.set(dut.bus.wdata, 0xFFFF_FFFF)
        ctx.set(dut.bus.we, 1)
        await ctx.tick()
        ctx.set(dut.bus.we, 0)
        assert ctx.get(dut.bus.rdata) == (1 << 17) - 1
        ctx.set(dut.inc_cycles, 1); ctx.set(dut.inc_mac, 1); ctx.set(dut.inc_w_rd, 1)
        for _ in range(3):
            await ctx.tick()
        for name, want in (("CYCLES", 3), ("MAC_CYCLES", 0), ("W_RD_BYTES", 0)):
            ctx.set(dut.bus.addr, CSR_MAP[name])
            assert ctx.get(dut.bus.rdata) == want, name

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

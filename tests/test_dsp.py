"""rtl.dsp: the PE array's products in ECP5 MULT18X18Ds with their input and output registers
against the plain PE array (fabric registers around a ``*``): yosys bounded equivalence proofs
with a behavioural model of the MULT18X18D subset rtl.dsp uses (yosys ships none)."""
import dataclasses
import os
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal

import rtl.dsp as dsp
import rtl.pe_array as pa
from sushi.config import PRESETS


def mult18x18d_model() -> str:
    """The MULT18X18D as rtl.dsp configures it: A and B (18 bits, signed per SIGNEDA/SIGNEDB)
    through the input registers when REG_INPUTx_CLK is CLK0, their 36-bit product through the
    output register when REG_OUTPUT_CLK is CLK0; CE0 enables and RST0 clears (synchronously)
    every register; SOURCEx and the other parameters are accepted and ignored."""
    ins = [f"A{i}" for i in range(18)] + [f"B{i}" for i in range(18)]
    ins += ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB", "CLK0", "CE0", "RST0"]
    params = {"REG_INPUTA_CLK": "NONE", "REG_INPUTA_CE": "CE0", "REG_INPUTA_RST": "RST0",
              "REG_INPUTB_CLK": "NONE", "REG_INPUTB_CE": "CE0", "REG_INPUTB_RST": "RST0",
              "REG_INPUTC_CLK": "NONE", "REG_PIPELINE_CLK": "NONE", "REG_OUTPUT_CLK": "NONE",
              "REG_OUTPUT_CE": "CE0", "REG_OUTPUT_RST": "RST0", "GSR": "ENABLED",
              "RESETMODE": "SYNC", "MULT_BYPASS": "DISABLED", "SOURCEB_MODE": "B_SHIFT",
              "CAS_MATCH_REG": "FALSE", "HIGHSPEED_CLK": "NONE"}
    cat = lambda p, n: "{" + ", ".join(f"{p}{i}" for i in reversed(range(n))) + "}"  # noqa: E731
    return "\n".join([
        "module MULT18X18D(" + ", ".join(ins + [f"P{i}" for i in range(36)]) + ");",
        *(f"  input {p};" for p in ins), *(f"  output P{i};" for i in range(36)),
        *(f'  parameter {k} = "{v}";' for k, v in params.items()),
        f"  wire [17:0] a = {cat('A', 18)}, b = {cat('B', 18)};",
        "  reg [17:0] ar = 0, br = 0; reg [35:0] pr = 0;",
        '  wire [17:0] ai = REG_INPUTA_CLK == "NONE" ? a : ar;',
        '  wire [17:0] bi = REG_INPUTB_CLK == "NONE" ? b : br;',
        "  wire [35:0] uu = ai * bi;",
        "  wire signed [35:0] ss = $signed(ai) * $signed(bi);",
        "  wire signed [36:0] su = $signed(ai) * $signed({1'b0, bi}), us = $signed({1'b0, ai}) * $signed(bi);",
        "  wire [35:0] prod = SIGNEDA ? (SIGNEDB ? ss : su[35:0]) : (SIGNEDB ? us[35:0] : uu);",
        "  always @(posedge CLK0) if (RST0) begin ar <= 0; br <= 0; pr <= 0; end",
        "    else if (CE0) begin ar <= a; br <= b; pr <= prod[35:0]; end",
        f'  assign {cat("P", 36)} = REG_OUTPUT_CLK == "NONE" ? prod[35:0] : pr;',
        "endmodule", ""])


def write_forms(tmp_path, module, flag: str, make, names):
    """Verilog of ``make()`` with ``module.<flag>`` True (file ``names[0]``.v) and False
    (``names[1]``.v), the flag restored after."""
    old = getattr(module, flag)
    try:
        for value, name in zip((True, False), names):
            setattr(module, flag, value)
            (tmp_path / f"{name}.v").write_text(verilog.convert(make(), name=name))
    finally:
        setattr(module, flag, old)


def _prove(tmp_path, gold: str, gate: str, top_gold: str, top_gate: str, cycles: int):
    """(first: wreduce narrows the model's 18 x 18-bit multiplier of sign-extended bytes to the
    reference's 8 x 8 one, the registers become single-bit flip-flops, and the two sides'
    multipliers merge when their operands are the same flip-flops; a SAT proof of two
    differently built multipliers would take hours)"""
    from sushi import tools
    tools.setup()
    (tmp_path / "mult18x18d.v").write_text(mult18x18d_model())
    script = f"""read_verilog {gate}; read_verilog mult18x18d.v; hierarchy -top {top_gate}; proc; flatten
read_verilog {gold}; proc
miter -equiv -flatten -make_outputs -ignore_gold_x {top_gold} {top_gate} miter; hierarchy -top miter
async2sync; opt -full; wreduce; simplemap t:$*dff*; opt -full
sat -verify -seq {cycles} -set-init-zero -prove trigger 0 -timeout 600 miter"""
    return subprocess.run([os.environ["YOSYS"], "-q", "-p", script], cwd=tmp_path,
                          capture_output=True, text=True)


@pytest.mark.parametrize("signed_a,signed_b", [(True, True), (True, False), (False, True), (False, False)])
def test_registered_product_is_a_times_b_two_cycles_late(tmp_path, signed_a, signed_b):
    """registered_product of 8- and 16-bit operands against ``p <= a_r * b_r`` in the fabric;
    the model with its registers off must fail the proof (the check sees the latency)."""
    class Ref:
        def __init__(self, dsp_form):
            self.dsp_form = dsp_form

        def elaborate(self, platform):
            m = Module()
            a, b = Signal(8, name="a"), Signal(16, name="b")
            p = Signal(24, name="p")
            if self.dsp_form:
                m.d.comb += p.eq(dsp.registered_product(m, "mul", a, b, 24, signed_a=signed_a,
                                                        signed_b=signed_b))
            else:
                ar, br = Signal(8, reset_less=True), Signal(16, reset_less=True)
                ax = ar.as_signed() if signed_a else ar
                bx = br.as_signed() if signed_b else br
                m.d.sync += [ar.eq(a), br.eq(b), p.eq(ax * bx)]
            self.ports = [a, b, p]
            return m
    for form, name in ((True, "gate"), (False, "gold")):
        top = Ref(form)
        m = top.elaborate(None)
        (tmp_path / f"{name}.v").write_text(verilog.convert(m, name=name, ports=top.ports))
    r = _prove(tmp_path, "gold.v", "gate.v", "gold", "gate", 5)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # the same proof against a DSP whose output register is off: one cycle early, so it fails
    text = (tmp_path / "gate.v").read_text()
    assert text.count('.REG_OUTPUT_CLK("CLK0")') == 1
    (tmp_path / "gate.v").write_text(text.replace('.REG_OUTPUT_CLK("CLK0")', '.REG_OUTPUT_CLK("NONE")'))
    r = _prove(tmp_path, "gold.v", "gate.v", "gold", "gate", 5)
    assert r.returncode != 0 and "proof did fail" in r.stderr


@pytest.mark.parametrize("rows,cols", [(2, 2), (4, 2), (4, 4)])
def test_ecp5_dsp_pe_array_equals_the_plain_one(tmp_path, rows, cols):
    """The deep PE array with its operands and products in the MULT18X18Ds (ECP5 builds) against
    the one with fabric registers: a bounded proof over its latency + 3 cycles from reset, any
    inputs (dense and depthwise steps, padding, first/last), with R = V and R > V."""
    cfg = dataclasses.replace(PRESETS["ulx3s"], pe_rows=rows, pe_cols=cols)
    assert cfg.deep_pipeline
    write_forms(tmp_path, dsp, "ECP5_DSP_REGS", lambda: pa.PeArray(cfg), ("pe_dsp", "pe_ref"))
    assert "MULT18X18D" in (tmp_path / "pe_dsp.v").read_text()
    assert "MULT18X18D" not in (tmp_path / "pe_ref.v").read_text()
    r = _prove(tmp_path, "pe_ref.v", "pe_dsp.v", "pe_ref", "pe_dsp", pa.latency(cfg) + 3)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_ecp5_dsp_postproc_equals_the_plain_one(tmp_path):
    """The deep post-processor with x * mult's two partial products in MULT18X18Ds (ECP5 builds)
    against the one with fabric registers: a bounded proof over its latency + 3 cycles, any
    beats."""
    from rtl.postproc import Postproc, latency
    cfg = dataclasses.replace(PRESETS["ulx3s"], pe_rows=2, pe_cols=2)
    write_forms(tmp_path, dsp, "ECP5_DSP_REGS", lambda: Postproc(cfg), ("pp_dsp", "pp_ref"))
    text = (tmp_path / "pp_dsp.v").read_text()
    assert text.count("MULT18X18D ") == 2 * cfg.pe_cols
    n = latency(cfg) + 3                # a beat from the first cycles reaches the output
    r = _prove(tmp_path, "pp_ref.v", "pp_dsp.v", "pp_ref", "pp_dsp", n)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # a high partial product taking its (signed) half of x as unsigned: the proof fails
    assert ".SIGNEDA(1'h1)" in text
    (tmp_path / "pp_dsp.v").write_text(text.replace(".SIGNEDA(1'h1)", ".SIGNEDA(1'h0)", 1))
    r = _prove(tmp_path, "pp_ref.v", "pp_dsp.v", "pp_ref", "pp_dsp", n)
    assert r.returncode != 0 and "proof did fail" in r.stderr

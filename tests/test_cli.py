"""The CLI contract: names, JSON keys, --help everywhere, exit status 2 on bad input."""
import json
import subprocess
import sys

import onnx
import pytest

from models import zoo
from sushi import __version__
from sushi.cli import main

COMMANDS = ["compile", "gen", "verify", "train", "trace", "serve", "build", "deploy", "bench", "demo"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "sushi", *args], capture_output=True, text=True, timeout=300)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sushi {__version__}"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_on_every_command(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert f"usage: sushi {cmd}" in capsys.readouterr().out


def test_missing_model_exit_2(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o")]) == 2
    assert f"model file {tmp_path / 'nope.onnx'} does not exist" in capsys.readouterr().err


def test_unknown_preset_exit_2(tmp_path, capsys):
    assert main(["gen", "--config", "huge", "-o", str(tmp_path)]) == 2
    assert "unknown preset 'huge'; presets: tiny, 8x8, 16x8" in capsys.readouterr().err


def test_nonsense_config_file_exit_2(tmp_path, capsys):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"pe_rows": 6, "pe_cols": 4}))
    assert main(["gen", "--config", str(f), "-o", str(tmp_path / "o")]) == 2
    assert "'pe_rows' (6) must be a multiple of 'pe_cols' (4)" in capsys.readouterr().err


def test_verify_non_build_exit_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "is not a build directory" in capsys.readouterr().err


def test_compile_and_verify_golden_json(tmp_path):
    m = tmp_path / "m.onnx"
    onnx.save(zoo.tiny_cnn(), m)
    r = run("compile", str(m), "-o", str(tmp_path / "b"), "--config", "tiny")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b" / "manifest.json").exists()
    r = run("verify", str(tmp_path / "b"), "--sim", "golden", "--inputs", "3", "--json", str(tmp_path / "v.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "v.json").read_text())
    for k in ("bit_exact", "mismatched_bytes", "cycles", "macs", "pe_utilization", "dram_weight_bytes",
              "dram_act_bytes", "onnx_max_abs_err", "onnx_top1_agreement"):
        assert k in rep, k
    assert rep["bit_exact"] is True and rep["macs"] > 0


def test_truncated_onnx_exit_2_and_no_output(tmp_path, capsys):
    m = tmp_path / "m.onnx"
    raw = zoo.tiny_cnn().SerializeToString()
    m.write_bytes(raw[: len(raw) // 2])
    assert main(["compile", str(m), "-o", str(tmp_path / "b")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_cli_reference_is_current(monkeypatch):
    """docs/cli.md is generated from the parser; regenerate with `python -m sushi.clidoc > docs/cli.md`."""
    from pathlib import Path
    from sushi.clidoc import cli_markdown
    monkeypatch.setenv("COLUMNS", "100")
    doc = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert doc.read_text() == cli_markdown()

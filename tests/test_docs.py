"""Every code block of docs/quickstart.md runs, in order, in a scratch directory."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.S)


def blocks(doc):
    return BLOCK.findall((ROOT / "docs" / doc).read_text())


def test_quickstart_has_examples():
    kinds = [k for k, _ in blocks("quickstart.md")]
    assert kinds.count("sh") >= 5 and kinds.count("python") >= 3


def test_quickstart_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for i, (kind, code) in enumerate(blocks("quickstart.md")):
        if kind == "python":
            r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, f"block {i} (python) failed:\n{code}\n{r.stderr[-3000:]}"
            continue
        for line in code.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "sushi", line
            r = subprocess.run([sys.executable, "-m", "sushi", *argv[1:]], cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"block {i}: `{line}` exited {r.returncode}:\n{r.stderr[-3000:]}"
    assert (tmp_path / "qs" / "serve.json").exists() and (tmp_path / "qs" / "verify.json").exists()

"""The docs stay true: every code block of docs/quickstart.md and docs/add_board.md runs, every page
under docs/ is linked from the README, and the README's commands parse."""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(python|sh)\n(.*?)```", re.S)
#: first line of a python block that is a file to create / a piece to append, not code to run
FILE_BLOCK = re.compile(r"# (file|append to): (\S+)\n")


def blocks(doc):
    return BLOCK.findall((ROOT / "docs" / doc).read_text())


def _run_blocks(doc, cwd, env, file_root=None):
    """Run the blocks of ``doc`` in order in ``cwd``: python blocks as scripts, sh blocks line by line
    as `python -m sushi ...`; file blocks (``# file: PATH`` / ``# append to: PATH``) are applied to
    ``file_root`` (a scratch copy of the repository)."""
    for i, (kind, code) in enumerate(blocks(doc)):
        m = FILE_BLOCK.match(code)
        if kind == "python" and m:
            assert file_root is not None, f"{doc} block {i}: file blocks need a scratch repository"
            target = file_root / m.group(2)
            body = code[m.end():]
            if m.group(1) == "file":
                assert not target.exists(), f"{doc} block {i}: {m.group(2)} already exists"
                target.write_text(body)
            else:
                target.write_text(target.read_text() + "\n\n" + body)
            continue
        if kind == "python":
            r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                               timeout=600)
            assert r.returncode == 0, f"{doc} block {i} (python) failed:\n{code}\n{r.stderr[-3000:]}"
            continue
        for line in code.strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "sushi", line
            r = subprocess.run([sys.executable, "-m", "sushi", *argv[1:]], cwd=cwd, env=env,
                               capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"{doc} block {i}: `{line}` exited {r.returncode}:\n{r.stderr[-3000:]}"


def test_quickstart_has_examples():
    kinds = [k for k, _ in blocks("quickstart.md")]
    assert kinds.count("sh") >= 5 and kinds.count("python") >= 3


def test_quickstart_runs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    _run_blocks("quickstart.md", tmp_path, env)
    assert (tmp_path / "qs" / "serve.json").exists() and (tmp_path / "qs" / "verify.json").exists()


def _scratch_repo(dst: Path, copy=("boards", "sushi")) -> Path:
    """The repository's packages under ``dst``: ``copy`` copied (the guide edits them), the rest linked."""
    dst.mkdir(parents=True)
    for d in sorted(ROOT.iterdir()):
        if not (d / "__init__.py").exists():
            continue
        if d.name in copy:
            shutil.copytree(d, dst / d.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dst / d.name).symlink_to(d, target_is_directory=True)
    return dst


def test_add_board_has_examples():
    bl = blocks("add_board.md")
    files = [FILE_BLOCK.match(c).group(2) for k, c in bl if k == "python" and FILE_BLOCK.match(c)]
    assert files == ["boards/platforms.py", "sushi/config.py", "boards/build.py"]
    assert any("--elaborate-only" in c for k, c in bl if k == "sh")


def test_add_board_runs(tmp_path):
    """The guide's platform, preset and board entry, applied to a copy of boards/ and sushi/, give a
    board that `sushi build --board ulx3s-45f --elaborate-only` elaborates, with the guide's pins."""
    repo = _scratch_repo(tmp_path / "repo")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(repo))
    _run_blocks("add_board.md", work, env, file_root=repo)
    rep = (work / "nb" / "ulx3s-45f" / "report.json").read_text()
    assert '"built": false' in rep and '"device": "LFE5U-45F-BG381"' in rep


def test_elaborate_only_for_a_shipped_board(tmp_path):
    """`sushi build --elaborate-only` stops before the vendor tools and says so in report.json."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "sushi", "build", "--board", "icebreaker", "--elaborate-only",
                        "-o", "b"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    import json
    rep = json.loads((tmp_path / "b" / "report.json").read_text())
    assert rep["built"] is False and rep["board"] == "icebreaker" and "elaborate_s" in rep["steps"]
    assert (tmp_path / "b" / "build" / "sushi_soc.pcf").exists()
    assert not (tmp_path / "b" / "build" / "sushi_soc.bin").exists()


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", readme))
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages - linked == set(), f"not linked from README.md: {sorted(pages - linked)}"
    assert linked - pages == set(), f"README.md links missing pages: {sorted(linked - pages)}"


def _readme_commands():
    """The `sushi ...` lines of the README's flow block, optional parts ([...]) included."""
    readme = (ROOT / "README.md").read_text()
    flow = readme.split("## The flow", 1)[1].split("```", 2)[1]
    out = []
    for line in flow.splitlines():
        if not line.startswith("sushi "):
            continue
        cmd = re.split(r"\s{2,}", line.strip())[0]
        cmd = cmd.replace("[", "").replace("]", "")
        out.append(shlex.split(cmd)[1:])
    return out


def test_readme_commands_parse():
    from sushi.cli import build_parser
    cmds = _readme_commands()
    assert {c[0] for c in cmds} >= {"train", "compile", "gen", "verify", "trace", "serve", "build", "deploy",
                                    "bench", "demo"}
    parser = build_parser()
    for argv in cmds:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: sushi {' '.join(argv)}")


def test_readme_python_modules_exist():
    import importlib.util
    readme = (ROOT / "README.md").read_text()
    mods = set(re.findall(r"python -m ([\w.]+)", readme))
    assert mods, "the README names no python -m modules?"
    for m in sorted(mods):
        assert importlib.util.find_spec(m) is not None, f"README names python -m {m}, which does not exist"

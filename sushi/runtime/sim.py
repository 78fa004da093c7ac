"""SimSoC: the SoC (byte-stream link) in Verilator under cocotb, as a Transport for Device.

The simulation replaces the UART by byte streams at the UART boundary (``SushiSoC(link="stream")``):
the host's frames reach the same HostLink as on the boards, one byte per clock cycle.  The cocotb
module :mod:`sushi.runtime.cocotb_link` bridges a Unix socket to those streams.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from .transport import LinkError, LinkTimeout, Transport

__all__ = ["SimSoC", "SimTransport", "SOC_HARNESS_VERSION"]

SOC_HARNESS_VERSION = 1
REPO = Path(__file__).resolve().parents[2]


class SimSoC:
    """Builds (cached) and starts the Verilated SoC.  ``mem_bytes``: the memory standing in for
    DRAM; ``timeout_cycles``: the link's inter-byte timeout (short in simulation)."""

    def __init__(self, cfg, mem_bytes: int = 1 << 16, timeout_cycles: int = 4000, work_dir=None,
                 cache_dir=None):
        from sushi.config import load_config
        self.cfg = load_config(cfg)
        self.mem_bytes = mem_bytes
        self.timeout_cycles = timeout_cycles
        self.work_dir = Path(work_dir) if work_dir else None
        from sim.rtl import cache_root
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root()
        self.build_dir = None
        self.build_s = None

    def build(self) -> Path:
        if self.build_dir is not None:
            return self.build_dir
        t0 = time.perf_counter()
        from amaranth.back import verilog
        from boards.soc import SOC_NAME, SushiSoC
        from sim.dram_model import mem_verilog
        from sim.rtl import _ensure_verilator_on_path, _runner, cached_verilator_build, toolchain_key
        _ensure_verilator_on_path()
        soc = SushiSoC(self.cfg, ram="generic", mem_bytes=self.mem_bytes, link="stream",
                       timeout_cycles=self.timeout_cycles)
        texts = {f"{SOC_NAME}.v": verilog.convert(soc, name=SOC_NAME, emit_src=False),
                 "sushi_dram_mem.v": mem_verilog(),
                 "public.vlt": '`verilator_config\npublic_flat_rw -module "sushi_soc" -var "*"\n'}
        h = hashlib.sha256(f"soc v{SOC_HARNESS_VERSION} {toolchain_key()}".encode())
        for name in sorted(texts):
            h.update(name.encode() + b"\0" + texts[name].encode() + b"\0")
        bdir = self.cache_dir / f"soc-{self.cfg.name}-{h.hexdigest()[:16]}"
        runner = _runner(False)
        cached_verilator_build(
            bdir, texts, lambda src: runner.build(
                sources=[src / n for n in sorted(texts)], hdl_toplevel=SOC_NAME, build_dir=bdir / "obj",
                build_args=["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast", "-CFLAGS", "-O2"],
                timescale=("1ns", "1ps"), always=False, log_file=bdir / "build.log"),
            {"cfg": self.cfg.to_json(), "mem_bytes": self.mem_bytes})
        self.build_dir = bdir
        self.build_s = time.perf_counter() - t0
        return bdir

    def open(self, connect_timeout: float = 120.0) -> "SimTransport":
        return SimTransport(self, connect_timeout)


class SimTransport(Transport):
    """A running simulation; ``close()`` ends it and fills ``stats`` (cycles, bytes, wall time)."""

    def __init__(self, soc: SimSoC, connect_timeout: float):
        from boards.soc import SOC_NAME
        from cocotb_tools.runner import get_runner
        self.name = f"simulated SoC ({soc.cfg.name})"
        bdir = soc.build()
        self.own_dir = soc.work_dir is None
        self.wdir = Path(tempfile.mkdtemp(prefix="sushi-soc-")) if self.own_dir else soc.work_dir
        self.wdir.mkdir(parents=True, exist_ok=True)
        self.sock_dir = tempfile.mkdtemp(prefix="ss-", dir="/tmp")
        path = os.path.join(self.sock_dir, "link")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(0.5)
        self.stats_path = self.wdir / "stats.json"
        self.log = self.wdir / "sim.log"
        self.stats = None
        self.error = None
        env = {"SUSHI_SOC_SOCKET": path, "SUSHI_SOC_STATS": str(self.stats_path),
               "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in sys.path if p])}

        def target():
            try:
                get_runner("verilator").test(
                    test_module="sushi.runtime.cocotb_link", hdl_toplevel=SOC_NAME,
                    hdl_toplevel_lang="verilog", build_dir=bdir / "obj", test_dir=self.wdir,
                    extra_env=env, log_file=self.log, results_xml=str(self.wdir / "results.xml"))
            except BaseException as e:      # the runner raises SystemExit on failure
                self.error = e
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        t_end = time.monotonic() + connect_timeout
        self.sock = None
        while self.sock is None:
            try:
                self.sock, _ = srv.accept()
            except socket.timeout:
                if not self.thread.is_alive() or time.monotonic() > t_end:
                    srv.close()
                    raise LinkError(f"the SoC simulation did not start ({self.error or 'timeout'}); "
                                    f"log: {self.log}")
        srv.close()
        self.sock.settimeout(None)

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise LinkError("the simulation is closed")
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise LinkError(f"the SoC simulation went away ({e}); log: {self.log}") from None

    def recv(self, timeout: float) -> bytes:
        if self.sock is None:
            raise LinkError("the simulation is closed")
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return b""
        if not data:
            raise LinkError(f"the SoC simulation ended; log: {self.log}")
        return data

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.thread.join(timeout=120)
        self.sock.close()
        self.sock = None
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        if self.stats_path.exists():
            self.stats = json.loads(self.stats_path.read_text())
        if self.own_dir and self.error is None:
            shutil.rmtree(self.wdir, ignore_errors=True)

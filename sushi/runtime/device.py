"""Device: the one host API for a SUSHI SoC (docs/boards.md), over any Transport."""
from __future__ import annotations

import collections
import struct
import time
from dataclasses import dataclass, field

from .protocol import (COUNTER_CSRS, MAX_DATA, Cmd, Code, ProtocolError, ReplyParser,
                       encode_request)
from .transport import LinkError, LinkTimeout, Transport

__all__ = ["Device", "DeviceError", "LinkError", "LinkTimeout", "Program", "RunResult", "COUNTER_NAMES"]

#: READ_COUNTERS field names, in reply order (CSR indices in protocol.COUNTER_CSRS)
COUNTER_NAMES = ("status", "cycles", "w_rd_bytes", "act_rd_bytes", "act_wr_bytes", "instr_rd_bytes",
                 "pb_hits", "pb_misses", "instrs", "mac_cycles", "hw_id")


class DeviceError(RuntimeError):
    """The device answered with an error code."""

    def __init__(self, cmd, code, msg):
        super().__init__(msg)
        self.cmd, self.code = cmd, code


@dataclass
class Program:
    """A SubNet program in device memory: where it is, where its inputs and outputs are."""
    prog_base: int
    weight_base: int
    inputs: list = field(default_factory=list)     # [(addr, nbytes)]
    outputs: list = field(default_factory=list)    # [(addr, nbytes)]

    @classmethod
    def from_build(cls, build, program: str = "main") -> "Program":
        p = build.program(program)
        inp = p["input"]
        H, W, _ = inp["hwc"]
        nin = H * W * inp["c_words"] * build.cfg.pe_cols
        return cls(prog_base=int(p["base"]), weight_base=int(build.memory["weight_base"]),
                   inputs=[(int(inp["addr"]), nin)], outputs=[build.output_region(program)])


@dataclass
class RunResult:
    outputs: list          # bytes per Program.outputs entry
    counters: dict         # COUNTER_NAMES -> int, plus busy/done/error
    wall_s: float

    @property
    def error(self) -> int:
        return self.counters["error"]


def _status_fields(status: int) -> dict:
    return {"busy": status & 1, "done": (status >> 1) & 1, "error": (status >> 8) & 0xFF}


class Device:
    """A SUSHI SoC behind ``transport``.  Every call sends one or more request frames and waits
    up to ``timeout`` seconds for each reply (``run_timeout`` for LOAD_SG / RUN).  A reply with an
    error code raises :class:`DeviceError`; no reply raises :class:`LinkTimeout`."""

    def __init__(self, transport: Transport, timeout: float = 5.0, run_timeout: float = 60.0):
        self.t = transport
        self.timeout = timeout
        self.run_timeout = run_timeout
        self.parser = ReplyParser()
        self._replies = collections.deque()
        self._info = None
        self.frames = 0

    # ---- constructors
    @classmethod
    def open_serial(cls, port: str, baud: int = 115200, **kw) -> "Device":
        from .transport import SerialTransport
        return cls(SerialTransport(port, baud), **kw)

    @classmethod
    def open_sim(cls, cfg, **kw) -> "Device":
        """The SoC in Verilator (see :class:`sushi.runtime.sim.SimSoC`); kw go to SimSoC."""
        from .sim import SimSoC
        dev_kw = {k: kw.pop(k) for k in ("timeout", "run_timeout") if k in kw}
        dev_kw.setdefault("timeout", 60.0)
        dev_kw.setdefault("run_timeout", 300.0)
        return cls(SimSoC(cfg, **kw).open(), **dev_kw)

    def close(self):
        self.t.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- frames
    def send_raw(self, data: bytes) -> None:
        self.t.send(data)

    def recv_reply(self, timeout: float, what: str = "a request"):
        """The next reply frame, or LinkTimeout (replies to pipelined requests come in order)."""
        t_end = time.monotonic() + timeout
        while not self._replies:
            left = t_end - time.monotonic()
            if left <= 0:
                raise LinkTimeout(f"no reply from the device on {self.t.name} within {timeout:g} s "
                                  f"to {what} (is the board programmed with a SUSHI bitstream, and "
                                  f"the baud rate right?)")
            data = self.t.recv(min(left, 0.5))
            if data:
                self._replies.extend(self.parser.feed(data))
        return self._replies.popleft()

    def request(self, cmd: int, payload: bytes = b"", timeout: "float | None" = None,
                check: bool = True):
        """Send one frame, return its Reply; ``check``: raise DeviceError on an error code."""
        try:
            name = Cmd(cmd).name
        except ValueError:
            name = f"command {cmd:#04x}"
        if self._replies:
            raise ProtocolError(f"unexpected replies before {name}: {list(self._replies)}")
        self.t.send(encode_request(cmd, payload))
        self.frames += 1
        rep = self.recv_reply(self.timeout if timeout is None else timeout, name)
        if check and rep.code != Code.OK:
            raise DeviceError(cmd, rep.code, f"device answered {name} with {rep.code_name}")
        return rep

    # ---- commands
    def status(self) -> dict:
        p = self.request(Cmd.STATUS).payload
        status, hw_id, mem_bytes, proto = struct.unpack("<4I", p)
        info = {"status": status, **_status_fields(status), "hw_id": hw_id,
                "isa_version": hw_id >> 24, "pe_rows": (hw_id >> 8) & 0xFF, "pe_cols": hw_id & 0xFF,
                "mem_bytes": mem_bytes, "proto_version": proto & 0xFFFF, "max_payload": proto >> 16}
        self._info = info
        return info

    @property
    def info(self) -> dict:
        return self._info or self.status()

    def _aligned(self, addr: int, n: int):
        V = self.info["pe_cols"]
        a0 = addr - addr % V
        a1 = -(-(addr + n) // V) * V
        return a0, a1, V

    def write_mem(self, addr: int, data: bytes) -> None:
        """Write bytes at any address (unaligned edges by read-modify-write)."""
        data = bytes(data)
        a0, a1, V = self._aligned(addr, len(data))
        if a0 != addr or a1 != addr + len(data):
            buf = bytearray(self.read_mem(a0, a1 - a0)) if data else bytearray()
            buf[addr - a0:addr - a0 + len(data)] = data
            addr, data = a0, bytes(buf)
        step = MAX_DATA - MAX_DATA % V
        for off in range(0, len(data), step):
            self.request(Cmd.WRITE_MEM, struct.pack("<I", addr + off) + data[off:off + step])

    def read_mem(self, addr: int, n: int) -> bytes:
        a0, a1, V = self._aligned(addr, n)
        step = MAX_DATA - MAX_DATA % V
        out = bytearray()
        for a in range(a0, a1, step):
            k = min(step, a1 - a)
            p = self.request(Cmd.READ_MEM, struct.pack("<IH", a, k)).payload
            if len(p) != k:
                raise ProtocolError(f"READ_MEM returned {len(p)} bytes, asked for {k}")
            out += p
        return bytes(out[addr - a0:addr - a0 + n])

    def _run(self, cmd, prog_base: int, weight_base: int) -> dict:
        p = self.request(cmd, struct.pack("<II", prog_base, weight_base),
                         timeout=self.run_timeout).payload
        status, cycles = struct.unpack("<2I", p)
        return {"status": status, **_status_fields(status), "cycles": cycles}

    def load_subgraph(self, prog_base: int, weight_base: int = 0) -> dict:
        """Run a LOADSG program (SubGraph into the Persistent Buffer); returns its counters."""
        self._run(Cmd.LOAD_SG, prog_base, weight_base)
        return self.read_counters()

    def start(self, prog_base: int, weight_base: int) -> dict:
        """Run a SubNet program and wait until it is done: {status, busy, done, error, cycles}."""
        return self._run(Cmd.RUN, prog_base, weight_base)

    def read_counters(self) -> dict:
        p = self.request(Cmd.READ_COUNTERS).payload
        vals = struct.unpack(f"<{len(COUNTER_CSRS)}I", p)
        c = dict(zip(COUNTER_NAMES, vals))
        c.update(_status_fields(c["status"]))
        return c

    def run(self, program: Program, inputs) -> RunResult:
        """Write ``inputs`` (bytes, or a list of bytes per Program.inputs region), run the program,
        read its counters and outputs."""
        t0 = time.perf_counter()
        if isinstance(inputs, (bytes, bytearray, memoryview)):
            inputs = [bytes(inputs)]
        if len(inputs) != len(program.inputs):
            raise ValueError(f"{len(inputs)} input(s) given, the program has {len(program.inputs)}")
        for (addr, n), data in zip(program.inputs, inputs):
            if len(data) != n:
                raise ValueError(f"input at {addr:#x} is {len(data)} bytes, expected {n}")
            self.write_mem(addr, data)
        self.start(program.prog_base, program.weight_base)
        counters = self.read_counters()
        outs = [self.read_mem(a, n) for a, n in program.outputs]
        return RunResult(outputs=outs, counters=counters, wall_s=time.perf_counter() - t0)

"""cocotb test module run by sim.rtl.RtlSim: loads each job's DRAM image, runs it, writes results JSON."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, RisingEdge, Timer

__all__ = ["run_jobs", "CSR_NAMES", "CLK_NS"]

CLK_NS = 10
#: CSR index -> counter name (docs/isa.md)
CSR_NAMES = {4: "cycles", 5: "w_rd_bytes", 6: "act_rd_bytes", 7: "act_wr_bytes", 8: "instr_rd_bytes",
             9: "pb_hits", 10: "pb_misses", 11: "instrs", 12: "mac_cycles", 13: "hw_id"}
CSR_CTRL, CSR_STATUS, CSR_PROG_BASE, CSR_WEIGHT_BASE = 0, 1, 2, 3


class Host:
    """Drives the sushi_tb host CSR port (one access per clock cycle)."""

    def __init__(self, dut):
        self.dut = dut

    async def write(self, addr: int, value: int):
        d = self.dut
        d.csr_host.value = 1
        d.csr__addr.value = addr
        d.csr__wdata.value = value
        d.csr__we.value = 1
        await RisingEdge(d.clk)
        d.csr__we.value = 0

    async def read(self, addr: int) -> int:
        d = self.dut
        d.csr_host.value = 1
        d.csr__we.value = 0
        d.csr__addr.value = addr
        await RisingEdge(d.clk)         # sushi_tb registers the host's address
        await Timer(1, unit="ns")       # combinational read settles
        return int(d.csr__rdata.value)

    def release(self):
        self.dut.csr_host.value = 0


class DramBackdoor:
    """Loads and reads the DRAM model's array (``dram.mem.mem``) through VPI, one word per access.

    Uses the raw GPI handles (binary strings) instead of cocotb value objects: ~4x faster.  Words
    still zero since the simulator started are not written (the first load skips zero words).
    """

    def __init__(self, dut, width_bytes: int, depth_words: int):
        self.arr = dut.dram.mem.mem._handle
        self.V = width_bytes
        self.W = 8 * width_bytes
        self.depth = depth_words
        self.pristine = True          # no word written yet (by us or by the accelerator)

    def check(self, addr: int, nbytes: int):
        if addr % self.V or addr < 0 or addr + nbytes > self.depth * self.V:
            raise ValueError(f"DRAM access [{addr:#x}, +{nbytes}) is unaligned or outside "
                             f"the {self.depth * self.V}-byte DRAM")

    def write(self, addr: int, data: bytes):
        V, W = self.V, self.W
        if len(data) % V:
            data = data + bytes(V - len(data) % V)
        self.check(addr, len(data))
        base = addr // V
        get = self.arr.get_handle_by_index
        fmt = f"0{W}b"
        skip_zero = self.pristine
        for i in range(len(data) // V):
            v = int.from_bytes(data[i * V:(i + 1) * V], "little")
            if v or not skip_zero:
                get(base + i).set_signal_val_binstr(0, format(v, fmt))
        self.pristine = False

    def read(self, addr: int, nbytes: int) -> bytes:
        V = self.V
        n = -(-nbytes // V)
        self.check(addr, n * V)
        base = addr // V
        get = self.arr.get_handle_by_index
        out = bytearray()
        for i in range(n):
            s = get(base + i).get_signal_val_binstr()
            out += int(s.replace("x", "0").replace("z", "0").replace("X", "0").replace("Z", "0"), 2).to_bytes(V, "little")
        return bytes(out[:nbytes])


async def reset(dut, cycles: int = 4):
    dut.rst.value = 1
    dut.csr_host.value = 0
    dut.csr__we.value = 0
    dut.csr__addr.value = 0
    dut.csr__wdata.value = 0
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def run_one(dut, host: Host, mem: DramBackdoor, job: dict) -> dict:
    t0 = time.perf_counter()
    image = Path(job["image"]).read_bytes()
    mem.write(0, image)
    t_load = time.perf_counter() - t0
    await host.write(CSR_PROG_BASE, job["prog_base"])
    await host.write(CSR_WEIGHT_BASE, job["weight_base"])
    await host.write(CSR_CTRL, 1)
    host.release()
    t_start = cocotb.utils.get_sim_time(unit="ns")
    t1 = time.perf_counter()
    timeout_cycles = int(job["timeout_cycles"])
    done = RisingEdge(dut.done)
    fired = await First(done, Timer(timeout_cycles * CLK_NS, unit="ns"))
    timed_out = fired is not done and not int(dut.done.value)
    t_run = time.perf_counter() - t1
    sim_cycles = int(cocotb.utils.get_sim_time(unit="ns") - t_start) // CLK_NS
    await RisingEdge(dut.clk)
    res = {
        "timed_out": bool(timed_out),
        "sim_cycles": sim_cycles,
        "tb_cycles": int(dut.tb_cycles.value),
        "dram_rd_bytes": int(dut.dram_rd_bytes.value),
        "dram_wr_bytes": int(dut.dram_wr_bytes.value),
        "dram_addr_err": int(dut.dram_addr_err.value),
    }
    status = await host.read(CSR_STATUS)
    counters = {"status": status, "busy": status & 1, "done": (status >> 1) & 1,
                "error": (status >> 8) & 0xFF}
    for a, name in CSR_NAMES.items():
        counters[name] = await host.read(a)
    host.release()
    res["counters"] = counters
    t2 = time.perf_counter()
    res["regions"] = [mem.read(a, n).hex() for a, n in job["read_back"]]
    res["wall"] = {"load_s": t_load, "run_s": t_run, "read_s": time.perf_counter() - t2,
                   "total_s": time.perf_counter() - t0}
    if timed_out:
        await reset(dut)       # the accelerator is still busy: START would be ignored
    return res


@cocotb.test()
async def run_jobs(dut):
    """Run every job of $SUSHI_RTL_JOBS (JSON) and write $SUSHI_RTL_RESULTS (JSON)."""
    spec = json.loads(Path(os.environ["SUSHI_RTL_JOBS"]).read_text())
    out_path = Path(spec["results"])
    if spec.get("clock", "cocotb") == "cocotb":
        Clock(dut.clk, CLK_NS, unit="ns").start()     # else sushi_clkgen runs inside the design
    await reset(dut)
    host = Host(dut)
    mem = DramBackdoor(dut, spec["width_bytes"], spec["depth_words"])
    results = []
    for i, job in enumerate(spec["jobs"]):
        results.append(await run_one(dut, host, mem, job))
        out_path.write_text(json.dumps({"complete": False, "results": results}))
        dut._log.info("job %d: %d cycles, %.3f s", i, results[-1]["sim_cycles"], results[-1]["wall"]["run_s"])
    out_path.write_text(json.dumps({"complete": True, "results": results}))

"""cocotb test module run by sushi.runtime.sim: bridges a Unix socket to the SoC's byte streams.

Bytes from the socket are driven into ``rx`` (one per cycle while ``rx__ready``); bytes on ``tx``
are sent back.  While nothing moves the clock runs in steps of IDLE_CYCLES (one Python wake-up per
step).  The test ends when the host closes the socket; it logs cycles and bytes moved.
"""
from __future__ import annotations

import json
import os
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import First, ReadOnly, RisingEdge, Timer

CLK_NS = 10
IDLE_CYCLES = 128
QUIET_CYCLES = 16


@cocotb.test()
async def serve(dut):
    path = os.environ["SUSHI_SOC_SOCKET"]
    stats_path = os.environ.get("SUSHI_SOC_STATS")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    Clock(dut.clk, CLK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.rx__valid.value = 0
    dut.rx__payload.value = 0
    dut.tx__ready.value = 0
    for _ in range(4):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    pending = bytearray()
    pos = 0
    out = bytearray()
    n_rx = n_tx = 0
    active_cycles = 0
    t0 = time.perf_counter()
    t_start = cocotb.utils.get_sim_time(unit="ns")
    closed = False

    def poll():
        nonlocal closed, pending, pos
        try:
            data = s.recv(1 << 16)
        except BlockingIOError:
            return
        if not data:
            closed = True
        else:
            if pos:
                del pending[:pos]
                pos = 0
            pending += data

    def flush():
        if out:
            s.setblocking(True)
            s.sendall(bytes(out))
            s.setblocking(False)
            out.clear()

    while not closed:
        poll()
        if pos >= len(pending) and not int(dut.tx__valid.value):
            await First(RisingEdge(dut.tx__valid), Timer(IDLE_CYCLES * CLK_NS, unit="ns"))
            continue
        # active: exchange bytes cycle by cycle until both directions are quiet
        rx_on = tx_seen = rx_rdy = 0
        tx_data = 0
        quiet = 0
        n = 0
        while quiet < QUIET_CYCLES:
            await RisingEdge(dut.clk)
            n += 1
            if rx_on and rx_rdy:
                pos += 1
                n_rx += 1
            if tx_seen:
                out.append(tx_data)
                n_tx += 1
            if n % 256 == 0:
                poll()
                if len(out) >= 4096:
                    flush()
            if pos < len(pending):
                dut.rx__valid.value = 1
                dut.rx__payload.value = pending[pos]
                rx_on = 1
            else:
                dut.rx__valid.value = 0
                rx_on = 0
            dut.tx__ready.value = 1
            await ReadOnly()
            rx_rdy = int(dut.rx__ready.value)
            tx_seen = int(dut.tx__valid.value)
            if tx_seen:
                tx_data = int(dut.tx__payload.value)
            quiet = 0 if (rx_on or tx_seen) else quiet + 1
        active_cycles += n
        await RisingEdge(dut.clk)
        dut.tx__ready.value = 0
        dut.rx__valid.value = 0
        flush()
    s.close()
    wall = time.perf_counter() - t0
    cycles = int(cocotb.utils.get_sim_time(unit="ns") - t_start) // CLK_NS
    stats = {"cycles": cycles, "active_cycles": active_cycles, "rx_bytes": n_rx, "tx_bytes": n_tx,
             "wall_s": wall}
    dut._log.info("SoC link: %s", stats)
    if stats_path:
        with open(stats_path, "w") as f:
            json.dump(stats, f)

"""Performance model: predicted cycles per instruction from the program and the DRAM timing.

A first-order model of SushiAccel's micro-architecture (docs/isa.md): instruction fetch, DMA at
the DRAM bandwidth with a fixed latency per burst, CONV groups whose weight fetch overlaps the
previous group's compute (double buffering), one tile-step per cycle on the PE array, vector ops at
one word per cycle.  The benchmark reports its ratio to the RTL's measured cycles.
"""
from __future__ import annotations

from dataclasses import dataclass

from sushi import isa
from sushi.config import AccelConfig
from sushi.isa import Op

__all__ = ["DramTiming", "instr_cycles", "program_cycles"]


@dataclass(frozen=True)
class DramTiming:
    latency: int = 10              # cycles from an accepted read command to its first beat
    beats_per_cycle: float = 1.0   # sustained bandwidth in V-byte beats per cycle (<= 1)

    def burst(self, beats: int) -> float:
        return self.latency + beats / self.beats_per_cycle


def _conv_cycles(ins, cfg: AccelConfig, t: DramTiming) -> float:
    R, V = cfg.pe_rows, cfg.pe_cols
    P = ins.out_h * ins.out_w
    if ins.dw:
        steps, lanes, tiles = ins.kh * ins.kw, V, -(-ins.kh * ins.kw // R)
        drain = 1
        bursts = 1
    else:
        steps, lanes, tiles = ins.kh * ins.kw * ins.cin_w, R, ins.kh * ins.kw * ins.cin_w
        drain = R // V
        bursts = ins.kh * ins.kw  # contiguous runs of cin_w tiles
    compute = P * max(steps, drain) + 8
    fetch = t.burst(lanes * isa.PARAM_BYTES // V) + bursts * t.latency + tiles * R / t.beats_per_cycle
    return fetch + (ins.n_groups - 1) * max(compute, fetch) + compute


def instr_cycles(ins, cfg: AccelConfig, t: DramTiming) -> float:
    V = cfg.pe_cols
    c = t.burst(isa.INSTR_BYTES // V)
    if ins.op in (Op.LOAD, Op.STORE):
        c += t.burst(ins.n_words)
    elif ins.op == Op.CONV:
        c += _conv_cycles(ins, cfg, t)
    elif ins.op == Op.POOL:
        c += ins.out_h * ins.out_w * ins.c_w * ins.kh * ins.kw + 4
    elif ins.op == Op.ADD:
        c += 2 * ins.n_words + 4
    return c


def program_cycles(trace, cfg: AccelConfig, t: DramTiming = DramTiming()) -> float:
    """Predicted cycles of an executed instruction trace (GoldenModel's Counters.trace)."""
    return sum(instr_cycles(ins, cfg, t) for ins in trace)

"""First-order energy model of a SUSHI inference: off-chip (DRAM) bytes, on-chip SRAM bytes and
int8 MACs, each times a per-event energy.

Constants are the 45 nm, 0.9 V figures of M. Horowitz, "Computing's energy problem (and what we
can do about it)", ISSCC 2014, pp. 10-14 (Fig. 1.1.9 / the "rough energy costs" table).  Caveats:
they are for a 45 nm ASIC process, not an FPGA (an FPGA's logic and BRAM cost several times more
per operation; DRAM does not change with the accelerator's process), newer nodes scale logic and
SRAM down by roughly 2-4x while DRAM access energy scales far less; the SRAM figure depends on the
array size (8 KB: 10 pJ, 32 KB: 20 pJ, 1 MB: 100 pJ per 64-bit access).  Use the result for
comparisons (e.g. a resident SubGraph against none), not as an absolute power estimate.
Override any constant with ``EnergyModel(...)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["EnergyModel", "energy", "DEFAULT"]


@dataclass(frozen=True)
class EnergyModel:
    #: DRAM read or write, pJ per byte.  Horowitz 2014: DRAM 64-bit access 1.3-2.6 nJ
    #: -> 162.5-325 pJ/B; the midpoint 1.95 nJ / 8 B.
    dram_pj_per_byte: float = 1950.0 / 8
    #: on-chip SRAM read or write, pJ per byte.  Horowitz 2014: 64-bit access of an 8 KB SRAM
    #: 10 pJ (32 KB: 20 pJ) -> 1.25 pJ/B; the activation, weight and record buffers and the LUT
    #: copies are a few KB each.
    sram_pj_per_byte: float = 10.0 / 8
    #: Persistent Buffer read or write, pJ per byte.  The PB is larger (512 tiles of 64 B = 32 KB
    #: on 8x8-pb): Horowitz 2014 32 KB SRAM 20 pJ per 64-bit access -> 2.5 pJ/B.
    pb_pj_per_byte: float = 20.0 / 8
    #: one int8 x int8 multiply-accumulate into int32, pJ.  Horowitz 2014: 8-bit integer multiply
    #: 0.2 pJ + 32-bit integer add 0.1 pJ (the accumulation) = 0.3 pJ.
    mac_pj: float = 0.2 + 0.1

    def energy(self, c) -> dict:
        """Energy of one run from a :func:`sim.perf.predict` result, an RTL/golden counter dict or a
        ``Counters`` object -> ``{offchip_uj, onchip_uj, compute_uj, total_uj}`` (microjoules) plus
        the event counts used.

        Off chip: ``w_rd_bytes + act_rd_bytes + act_wr_bytes + instr_rd_bytes``.  On chip: the
        prediction's ``sram_rd/wr_bytes`` and ``pb_rd/wr_bytes`` when present; from counters alone
        (which have no SRAM counts) a lower bound: every DRAM byte is written into or read from a
        buffer once, PB hits read a tile from the PB.  Compute: ``macs`` when present, else
        ``mac_cycles * R * V`` needs the configuration (``tile_bytes``) - pass it as
        ``c["tile_bytes"]``; without it the MACs count as ``mac_cycles`` times 1.
        """
        d = c if isinstance(c, dict) else (c.as_dict() if hasattr(c, "as_dict") else vars(c))
        g = lambda k: int(d.get(k, 0) or 0)  # noqa: E731
        off = g("w_rd_bytes") + g("act_rd_bytes") + g("act_wr_bytes") + g("instr_rd_bytes")
        if "sram_rd_bytes" in d:
            sram = g("sram_rd_bytes") + g("sram_wr_bytes")
            pb = g("pb_rd_bytes") + g("pb_wr_bytes")
        else:
            tb = g("tile_bytes") or 1
            sram = off
            pb = g("pb_hits") * tb
        macs = g("macs") if "macs" in d else g("mac_cycles") * (g("tile_bytes") or 1)
        off_uj = off * self.dram_pj_per_byte * 1e-6
        on_uj = (sram * self.sram_pj_per_byte + pb * self.pb_pj_per_byte) * 1e-6
        comp_uj = macs * self.mac_pj * 1e-6
        return {"offchip_uj": off_uj, "onchip_uj": on_uj, "compute_uj": comp_uj,
                "total_uj": off_uj + on_uj + comp_uj,
                "offchip_bytes": off, "sram_bytes": sram, "pb_bytes": pb, "macs": macs,
                "constants_pj": asdict(self)}


DEFAULT = EnergyModel()


def energy(counters_or_prediction, model: EnergyModel = DEFAULT) -> dict:
    """``{offchip_uj, onchip_uj, compute_uj, total_uj, ...}`` of one run (see EnergyModel.energy)."""
    return model.energy(counters_or_prediction)

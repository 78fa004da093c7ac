"""Multipliers in the ECP5's DSP blocks with the blocks' own pipeline registers.

Yosys maps a ``$mul`` to a combinational MULT18X18D and leaves the flip-flops around it in the
fabric: a path from a register through the routing into the DSP, its 4 ns multiplier and the
routing back out (11-12 ns in the 8x8 ULX3S build).  With the DSP's input and output registers
on, those routes end and start at the registers inside the block, one cycle each.

``registered_product`` is that form of ``p <= a_r * b_r; a_r <= a; b_r <= b`` (reset-less
datapath registers, loaded every cycle): latency 2, as the fabric registers it stands for.
"""
from amaranth.hdl import Cat, ClockSignal, Const, Instance, Signal

from .bus import platform_is

__all__ = ["ECP5_DSP_REGS", "ecp5_dsp_regs", "registered_product"]

#: the PE array's products in MULT18X18Ds with input and output registers: None = ECP5
#: platforms only (the simulated and generic Verilog keep the fabric registers)
ECP5_DSP_REGS = None


def ecp5_dsp_regs(platform) -> bool:
    return platform_is(platform, "LatticeECP5Platform", ECP5_DSP_REGS)


def registered_product(m, name: str, a, b, width: int, *, signed_a=True, signed_b=True):
    """A ``Signal(width)`` (low bits of the product) holding ``a * b`` of two cycles before, from
    a MULT18X18D named ``name`` with its A, B and output registers on (clock ``sync``, always
    enabled, never reset)."""
    A, B = _operand(a, signed_a), _operand(b, signed_b)
    p = Signal(36, name=f"{name}_p")
    ports = {}
    for i in range(18):
        ports[f"i_A{i}"] = A[i]
        ports[f"i_B{i}"] = B[i]
    for i in range(36):
        ports[f"o_P{i}"] = p[i]
    m.submodules[name] = Instance(
        "MULT18X18D",
        p_REG_INPUTA_CLK="CLK0", p_REG_INPUTA_CE="CE0", p_REG_INPUTA_RST="RST0",
        p_REG_INPUTB_CLK="CLK0", p_REG_INPUTB_CE="CE0", p_REG_INPUTB_RST="RST0",
        p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
        p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0", p_REG_OUTPUT_RST="RST0",
        p_GSR="DISABLED", p_RESETMODE="SYNC", p_MULT_BYPASS="DISABLED",
        p_SOURCEB_MODE="B_SHIFT", p_CAS_MATCH_REG="FALSE", p_HIGHSPEED_CLK="NONE",
        i_SIGNEDA=int(signed_a), i_SIGNEDB=int(signed_b), i_SOURCEA=0, i_SOURCEB=0,
        i_CLK0=ClockSignal("sync"), i_CE0=1, i_RST0=0,
        **ports)
    out = Signal(width, name=name)
    m.d.comb += out.eq(p[:width])
    return out


def _operand(v, signed: bool):
    """``v`` (at most 18 bits) sign- or zero-extended to the DSP's 18-bit operand."""
    if len(v) > 18:
        raise ValueError(f"a MULT18X18D operand is at most 18 bits, not {len(v)}")
    top = v[-1] if signed else Const(0, 1)
    return Cat(v, *([top] * (18 - len(v))))

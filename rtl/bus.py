"""Interface signatures shared by the SUSHI blocks: DRAM command/data channels and the CSR port."""
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sushi.isa import INSTR_BYTES, Op, field_slices

__all__ = ["CmdSignature", "DataSignature", "CsrSignature", "INSTR_BITS", "instr_fields"]

INSTR_BITS = INSTR_BYTES * 8


class CmdSignature(wiring.Signature):
    """A DRAM command (initiator view): ``len`` beats of V bytes from byte address ``addr``."""

    def __init__(self):
        super().__init__({"valid": Out(1), "ready": In(1), "addr": Out(32), "len": Out(16)})

    def __eq__(self, other):
        return type(other) is CmdSignature

    def __repr__(self):
        return "CmdSignature()"


class DataSignature(wiring.Signature):
    """A data beat stream (producer view) of ``width`` bits."""

    def __init__(self, *, width: int):
        if not isinstance(width, int) or width <= 0:
            raise TypeError(f"'width' must be a positive integer, not {width!r}")
        self.width = width
        super().__init__({"valid": Out(1), "ready": In(1), "data": Out(width)})

    def __eq__(self, other):
        return type(other) is DataSignature and other.width == self.width

    def __repr__(self):
        return f"DataSignature(width={self.width})"


class CsrSignature(wiring.Signature):
    """The host CSR port (host view): combinational read, write strobe ``we``."""

    def __init__(self):
        super().__init__({"addr": Out(6), "wdata": Out(32), "we": Out(1), "rdata": In(32)})

    def __eq__(self, other):
        return type(other) is CsrSignature

    def __repr__(self):
        return "CsrSignature()"


def instr_fields(word, op: Op) -> dict:
    """Slices of a 256-bit instruction word, by field name, signed where the ISA says so."""
    out = {}
    for name, (lsb, width, signed) in field_slices(Op(op)).items():
        v = word[lsb:lsb + width]
        out[name] = v.as_signed() if signed else v
    return out


#: registers that only cut paths and never change a cycle (copies of values that are stable while
#: they are used, e.g. instruction fields): True everywhere but on small FPGAs (iCE40, where every
#: flip-flop costs a logic cell and the clock target is 30 MHz); None = decide by the platform
TIMING_REGS = None


def platform_is(platform, vendor: str, override=None) -> bool:
    """``override`` when it is set (a module's switch for tests), else whether ``platform`` is an
    ``amaranth.vendor.<vendor>`` platform."""
    if override is not None:
        return override
    import amaranth.vendor
    return isinstance(platform, getattr(amaranth.vendor, vendor))


def timing_regs(platform) -> bool:
    """Whether to build the cycle-neutral timing registers (see TIMING_REGS)."""
    return TIMING_REGS if TIMING_REGS is not None else not platform_is(platform, "LatticeICE40Platform")


def stable_copy(m, value, regs: bool, name: str, reset_less: bool = False):
    """``value`` registered every cycle when ``regs`` (for values that stay constant for at least
    a cycle before and while they are used), else ``value`` itself.  ``reset_less``: the register
    has no reset (a copy nothing reads before it has been loaded: no reset net to it)."""
    from amaranth.hdl import Signal
    if not regs:
        return value
    r = Signal.like(value, name=name, reset_less=reset_less)
    m.d.sync += r.eq(value)
    return r


def driving_register(m, port, name: str):
    """A register without reset, named ``name``, that drives ``port`` (of its shape): a data
    register behind a port whose value matters only where a valid bit or an enable says so.
    The caller loads it (``m.d.sync += r.eq(...)``)."""
    from amaranth.hdl import Signal
    r = Signal.like(port, name=name, reset_less=True)
    m.d.comb += port.eq(r)
    return r


#: the name suffix of fan-out copies (``fanout_copies``); the board builds keep their flip-flops
#: apart (yosys would otherwise merge identical flip-flops back into one)
DUP = "_dup"


def fanout_copies(m, value, n: int, name: str, reset_less: bool = False) -> list:
    """``n`` registered copies of ``value`` (each can sit beside its share of a wide fan-out: a
    select driving hundreds of mux LUTs, a word feeding a row of DSPs), named ``name_dupK``;
    ``reset_less`` as for ``stable_copy``."""
    from amaranth.hdl import Signal
    copies = [Signal.like(value, name=f"{name}{DUP}{k}", reset_less=reset_less) for k in range(n)]
    m.d.sync += [c.eq(value) for c in copies]
    return copies


#: attributes of the accelerator's buffers: no unit reads a word in the cycle it is written (the
#: double-buffered halves, the tables filled before use, instructions that never read their own
#: output), so synthesis may leave out the read-during-write bypass logic it would otherwise add
#: around a block RAM whose two ports do not define that case
BUFFER_ATTRS = {"no_rw_check": 1}

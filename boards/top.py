"""BoardTop: SushiSoC on a board: PLL to the target clock, UART pins, LEDs."""
from __future__ import annotations

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io

from .soc import SushiSoC

__all__ = ["BoardTop", "ice40_pll_params", "ecp5_pll_params"]


def ice40_pll_params(f_in: float, f_out: float) -> dict:
    """SB_PLL40 DIVR/DIVF/DIVQ reaching f_out from f_in (MHz) with the VCO in 533..1066 MHz."""
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            vco = f_pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                f = vco / (1 << divq)
                err = abs(f - f_out)
                if best is None or err < best[0]:
                    best = (err, divr, divf, divq, f)
    err, divr, divf, divq, f = best
    return {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "f_out": f}


def ecp5_pll_params(f_in: float, f_out: float) -> dict:
    """EHXPLLL CLKI_DIV/CLKFB_DIV/CLKOP_DIV (feedback from CLKOP), VCO 400..800 MHz."""
    best = None
    for ci in range(1, 129):
        for fb in range(1, 81):
            f = f_in * fb / ci
            op = max(1, min(128, round(600 / f)))
            if 400 <= f * op <= 800:
                err = abs(f - f_out)
                if best is None or err < best[0]:
                    best = (err, ci, fb, op, f)
    err, ci, fb, op, f = best
    return {"CLKI_DIV": ci, "CLKFB_DIV": fb, "CLKOP_DIV": op, "f_out": f}


class BoardTop(Elaboratable):
    """``board``: "icebreaker" or "ulx3s"; ``clock_mhz``: the PLL output; ``baud``: UART rate."""

    def __init__(self, board: str, cfg, clock_mhz: float, baud: int, mem_bytes: int):
        self.board, self.cfg, self.baud, self.mem_bytes = board, cfg, baud, mem_bytes
        if board == "icebreaker":
            self.pll = ice40_pll_params(12.0, clock_mhz)
        else:
            self.pll = ecp5_pll_params(25.0, clock_mhz)
        self.f_mhz = self.pll["f_out"]
        self.divisor = max(4, round(self.f_mhz * 1e6 / baud))

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        if self.board == "icebreaker":
            clk_pin = platform.request("clk12", dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_FILTER_RANGE=1,
                p_DIVR=self.pll["DIVR"], p_DIVF=self.pll["DIVF"], p_DIVQ=self.pll["DIVQ"],
                i_PACKAGEPIN=clk_pin.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=cd.clk, o_LOCK=locked)
            ram = "spram"
        else:
            m.submodules.clkbuf = clkbuf = io.Buffer("i", platform.request("clk25", dir="-"))
            m.submodules.pll = Instance(
                "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                p_CLKI_DIV=self.pll["CLKI_DIV"], p_CLKFB_DIV=self.pll["CLKFB_DIV"],
                p_CLKOP_DIV=self.pll["CLKOP_DIV"], p_CLKOP_CPHASE=self.pll["CLKOP_DIV"] - 1,
                p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                i_CLKI=clkbuf.i, i_CLKFB=cd.clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
                i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=cd.clk, o_LOCK=locked)
            ram = "generic"
        platform.add_clock_constraint(cd.clk, self.f_mhz * 1e6)
        # reset until the PLL has locked, then a few more cycles
        rst_cnt = Signal(4)
        m.domains.por = por = ClockDomain("por", reset_less=True)
        m.d.comb += por.clk.eq(cd.clk)
        with m.If(~locked):
            m.d.por += rst_cnt.eq(0)
        with m.Elif(rst_cnt != 15):
            m.d.por += rst_cnt.eq(rst_cnt + 1)
        if self.board == "icebreaker":
            m.d.comb += cd.rst.eq(rst_cnt != 15)
        else:   # the reset from a flip-flop (its net reaches a flip-flop in every unit)
            rst = Signal(init=1)
            m.d.por += rst.eq(rst_cnt != 15)
            m.d.comb += cd.rst.eq(rst)

        uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.rxb = rxb = io.Buffer("i", uart.rx)
        m.submodules.txb = txb = io.Buffer("o", uart.tx)
        m.submodules.soc = soc = SushiSoC(self.cfg, ram=ram, mem_bytes=self.mem_bytes, link="uart",
                                          divisor=self.divisor,
                                          timeout_cycles=int(self.f_mhz * 1e6 * 0.05))
        m.d.comb += [soc.uart_rx.eq(rxb.i), txb.o.eq(soc.uart_tx)]
        for i, sig in enumerate((soc.running, soc.error)):
            try:
                led = platform.request("led", i, dir="-")
            except Exception:
                break
            m.submodules[f"led{i}"] = b = io.Buffer("o", led)
            m.d.comb += b.o.eq(sig)
        return m

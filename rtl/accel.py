"""SushiAccel: the top level joining CSRs, sequencer, DMA, weight fetch, CONV and vector units."""
from amaranth.hdl import Const, Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sushi.config import VECTOR_OPS, AccelConfig
from sushi.isa import Op

from .bus import (BUFFER_ATTRS, DUP, CmdSignature, CsrSignature, DataSignature, driving_register,
                  fanout_copies, instr_fields, stable_copy, timing_regs)
from .conv import ConvEngine
from .csr import COUNTERS, CsrBlock
from .dma import Dma, ReadMux
from .postproc import Postproc
from .sequencer import Sequencer
from .vector import VectorUnit
from .window import CFG_PORTS, OUT_PORTS, WindowGen
from .weight_fetch import WeightFetch

__all__ = ["SushiAccel"]


def _vector_ops(cfg: AccelConfig, op, instr):
    """(vector instruction this configuration executes, one it does not, a POOL it executes)"""
    mode = instr_fields(instr, Op.POOL)["mode"]
    test = {"op_maxpool": (op == Op.POOL) & ~mode, "op_avgpool": (op == Op.POOL) & mode,
            "op_add": op == Op.ADD, "op_mul": op == Op.MUL, "op_lut": op == Op.LUT}
    if all(getattr(cfg, n) for n in VECTOR_OPS):
        return (op == Op.POOL) | (op == Op.ADD) | (op == Op.LUT) | (op == Op.MUL), Const(0), op == Op.POOL
    ok, bad = Const(0), Const(0)
    for n in VECTOR_OPS:
        if getattr(cfg, n):
            ok = ok | test[n]
        else:
            bad = bad | test[n]
    pool = Const(0)
    if cfg.op_maxpool or cfg.op_avgpool:
        pool = test["op_maxpool"] if not cfg.op_avgpool else (test["op_avgpool"] if not cfg.op_maxpool
                                                              else op == Op.POOL)
    return ok, bad, pool


class SushiAccel(wiring.Component):
    """The SUSHI accelerator (ISA v2) for one AccelConfig; ports as in docs/isa.md (flattened with ``__``).

    DRAM read port owners: the sequencer (instruction fetch), the DMA (LOAD), the weight fetcher
    (CONV tiles and records, LOADSG into the Persistent Buffer) and the vector unit (LUT tables).
    The Persistent Buffer and residency table live in the weight fetcher and survive START; only
    reset clears the table."""

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"'cfg' must be an AccelConfig, not {cfg!r}")
        self.cfg = cfg
        W = 8 * cfg.pe_cols
        super().__init__({
            "csr": In(CsrSignature()),
            "rd_cmd": Out(CmdSignature()), "rd_data": In(DataSignature(width=W)),
            "wr_cmd": Out(CmdSignature()), "wr_data": Out(DataSignature(width=W)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.csrs = csrs = CsrBlock(cfg)
        m.submodules.seq = seq = Sequencer(cfg)
        m.submodules.dma = dma = Dma(cfg)
        m.submodules.wfetch = wf = WeightFetch(cfg)
        m.submodules.conv = conv = ConvEngine(cfg)
        m.submodules.vec = vec = VectorUnit(cfg)
        m.submodules.pp = pp = Postproc(cfg, stable_bounds=True)      # clamp bounds: instruction fields
        m.submodules.rdmux = rdmux = ReadMux(cfg, 4)

        # host side
        wiring.connect(m, wiring.flipped(self.csr), csrs.bus)
        m.d.comb += [seq.start.eq(csrs.start), seq.prog_base.eq(csrs.prog_base),
                     csrs.busy.eq(seq.busy), csrs.done.eq(seq.done),
                     wf.weight_base.eq(csrs.weight_base)]

        # DRAM
        wiring.connect(m, rdmux.rd_cmd, wiring.flipped(self.rd_cmd))
        wiring.connect(m, wiring.flipped(self.rd_data), rdmux.rd_data)
        wiring.connect(m, seq.rd_cmd, rdmux.cmd0)
        wiring.connect(m, rdmux.data0, seq.rd_data)
        wiring.connect(m, dma.rd_cmd, rdmux.cmd1)
        wiring.connect(m, rdmux.data1, dma.rd_data)
        wiring.connect(m, wf.rd_cmd, rdmux.cmd2)
        wiring.connect(m, rdmux.data2, wf.rd_data)
        wiring.connect(m, vec.rd_cmd, rdmux.cmd3)
        wiring.connect(m, rdmux.data3, vec.rd_data)
        wiring.connect(m, dma.wr_cmd, wiring.flipped(self.wr_cmd))
        wiring.connect(m, dma.wr_data, wiring.flipped(self.wr_data))
        op = seq.exec_op
        is_vec, unsup_op, is_pool = _vector_ops(cfg, op, seq.instr)
        # the unit selects of the shared datapaths (window generator, activation buffer port,
        # post-processor input) and the unit starts from registered opcode decodes (on every
        # FPGA: a few flip-flops, and the starts fan out to the units' enables): the instruction
        # is loaded two cycles (three with deep_pipeline) before its exec_start and an
        # instruction ends only once the post-processor is idle
        regs = timing_regs(platform)
        # (with the timing registers named like a fan-out copy: the lanes' copies of the same
        # decode below are kept apart, and yosys would otherwise merge this one into one of them,
        # far from the activation buffer's port)
        is_vec_r = stable_copy(m, is_vec, True, "is_vec_r" + (DUP if regs else ""))
        is_pool_r = stable_copy(m, is_pool, True, "is_pool_r")
        # (named like a copy where the write select's copy below exists: the same decode)
        is_dma_r = stable_copy(m, (op == Op.LOAD) | (op == Op.STORE), True,
                               "is_dma_r" + (DUP if regs else ""))
        is_conv_r = stable_copy(m, op == Op.CONV, True, "is_conv_r")
        is_wf_r = stable_copy(m, (op == Op.CONV) | (op == Op.LOADSG) | (op == Op.SETRES), True, "is_wf_r")
        unit_rd = Mux(op == Op.LOAD, 1, Mux((op == Op.LUT) & cfg.op_lut, 3, 2))
        m.d.comb += rdmux.sel.eq(Mux(seq.fetching, 0, stable_copy(m, unit_rd, True, "unit_rd_r")))
        # an instruction needing a vector operation this configuration leaves out: error 2
        # (unsupported instruction); no unit starts from then on, the sequencer runs on to HALT
        go = Signal()
        if all(getattr(cfg, n) for n in VECTOR_OPS):
            m.d.comb += [go.eq(seq.exec_start), csrs.error.eq(seq.error)]
        else:
            unsup = Signal()
            unsup_op = stable_copy(m, unsup_op, True, "unsup_op_r")
            m.d.comb += go.eq(seq.exec_start & ~unsup & ~unsup_op)
            with m.If(csrs.start):
                m.d.sync += unsup.eq(0)
            with m.Elif(seq.exec_start & unsup_op):
                m.d.sync += unsup.eq(1)
            m.d.comb += csrs.error.eq(Mux(unsup, 2, seq.error))

        # dispatch
        for u in (dma, conv, vec, wf):
            m.d.comb += u.instr.eq(seq.instr)
        m.d.comb += [dma.start.eq(go & is_dma_r), conv.start.eq(go & is_conv_r), wf.start.eq(go & is_wf_r),
                     wf.pb_on.eq(seq.pb_on), wf.pb_key.eq(seq.pb_key),
                     vec.start.eq(go & is_vec_r)]
        fin = Signal()
        with m.If(seq.exec_start):
            m.d.sync += fin.eq(~go)         # a skipped instruction ends at once
        with m.Elif(dma.done | conv.done | vec.done | wf.done):
            m.d.sync += fin.eq(1)
        m.d.comb += seq.exec_done.eq(fin & ~pp.busy)

        # one window generator for the CONV engine and POOL (never at the same time)
        # its address terms modulo the activation buffer's (power of two) address space
        m.submodules.win = win = WindowGen(addr_bits=min(16, max(1, (cfg.act_buf_words - 1).bit_length())))
        for n, _ in CFG_PORTS:
            if n in ("n_cc", "n_c", "ioff", "obase0", "ostride"):
                m.d.comb += getattr(win, n).eq(Mux(is_pool_r, getattr(vec.win, n), getattr(conv.win, n)))
            else:   # same instruction field in CONV and POOL
                m.d.comb += getattr(win, n).eq(getattr(conv.win, n))
        # (with the timing registers the steps ORed: each user advances only while it runs, and
        # the OR folds into the window's enable logic where the select would be a LUT level)
        m.d.comb += [win.start.eq(conv.win.start | vec.win.start),
                     win.advance.eq(conv.win.advance | vec.win.advance if regs
                                    else Mux(is_pool_r, vec.win.advance, conv.win.advance))]
        for n, _ in OUT_PORTS:
            m.d.comb += [getattr(conv.win, n).eq(getattr(win, n)), getattr(vec.win, n).eq(getattr(win, n))]

        # weight buffer <-> CONV engine
        m.d.comb += [conv.full.eq(wf.full), wf.release.eq(conv.release),
                     wf.release_half.eq(conv.release_half),
                     wf.w_raddr.eq(conv.w_raddr), conv.w_rdata.eq(wf.w_rdata),
                     wf.p_raddr.eq(conv.p_raddr), conv.p_rdata.eq(wf.p_rdata)]

        # activation buffer: one synchronous read port, one write port
        abuf = Memory(shape=8 * cfg.pe_cols, depth=cfg.act_buf_words, init=[], attrs=BUFFER_ATTRS)
        m.submodules.abuf = abuf
        rp = abuf.read_port()
        wp = abuf.write_port()
        m.d.comb += [rp.addr.eq(Mux(is_dma_r, dma.buf_raddr, Mux(is_vec_r, vec.buf_raddr, conv.buf_raddr))),
                     rp.en.eq(Mux(is_dma_r, dma.buf_ren, Mux(is_vec_r, vec.buf_ren, conv.buf_ren))),
                     dma.buf_rdata.eq(rp.data), vec.buf_rdata.eq(rp.data), conv.buf_rdata.eq(rp.data)]
        # the post-processor's input: the vector unit's beat or the CONV engine's; with the timing
        # registers each lane's slice of the select is its own copy of is_vec_r (hundreds of mux
        # LUTs in all)
        if regs:
            V = cfg.pe_cols
            lane_vec = fanout_copies(m, is_vec, V, "is_vec_l")
            for name in ("valid", "tag", "lo", "hi"):
                m.d.comb += getattr(pp.i, name).eq(Mux(is_vec_r, getattr(vec.pp, name),
                                                       getattr(conv.pp, name)))
            for name, w in (("acc", 32), ("bias", 32), ("mult", 16), ("shift", 6)):
                src_v, src_c, dst = getattr(vec.pp, name), getattr(conv.pp, name), getattr(pp.i, name)
                for j in range(V):
                    m.d.comb += dst[w * j:w * (j + 1)].eq(Mux(lane_vec[j], src_v[w * j:w * (j + 1)],
                                                              src_c[w * j:w * (j + 1)]))
        else:
            with m.If(is_vec_r):
                wiring.connect(m, vec.pp, pp.i)
            with m.Else():
                wiring.connect(m, conv.pp, pp.i)
        # the write port: with the timing registers a cycle late (no unit reads a word it wrote in
        # the same instruction, and the next instruction starts cycles after the last write)
        # (address and data without a reset)
        w_en, w_addr, w_data = (dma.buf_we | pp.o_valid, Mux(dma.buf_we, dma.buf_waddr, pp.o_tag),
                                Mux(dma.buf_we, dma.buf_wdata, pp.o_data))
        if regs:
            # the address and data select from a registered decode of LOAD/STORE rather than the
            # DMA's write strobe (from the DRAM beat's valid): the post-processor has no beat in
            # flight during a LOAD or STORE (an instruction ends only once it is idle)
            dma_w = stable_copy(m, (op == Op.LOAD) | (op == Op.STORE), True, f"is_dma_w{DUP}")
            w_addr, w_data = (Mux(dma_w, dma.buf_waddr, pp.o_tag), Mux(dma_w, dma.buf_wdata, pp.o_data))
            m.d.sync += [wp.en.eq(w_en), driving_register(m, wp.addr, "wp_addr_r").eq(w_addr),
                         driving_register(m, wp.data, "wp_data_r").eq(w_data)]
        else:
            m.d.comb += [wp.en.eq(w_en), wp.addr.eq(w_addr), wp.data.eq(w_data)]

        # counters
        src = {"cycles": seq.busy, "w_rd": wf.inc_w_rd | vec.inc_w_rd, "act_rd": dma.inc_act_rd,
               "act_wr": dma.inc_act_wr, "instr_rd": seq.inc_instr_rd, "pb_hit": wf.inc_pb_hit,
               "pb_miss": wf.inc_pb_miss, "instr": seq.inc_instr, "mac": conv.inc_mac}
        # the unit events that come from long decisions (a GEN cycle's hit/miss, a CONV issue, DRAM
        # beats) count a cycle late: the totals are the same, and each lands long before done
        late = {"w_rd", "act_rd", "act_wr", "pb_hit", "pb_miss", "mac"}
        for n in COUNTERS:
            if n in late and cfg.perf_counters:
                r = Signal(name=f"inc_{n}_r")
                m.d.sync += r.eq(src[n])
                m.d.comb += getattr(csrs, f"inc_{n}").eq(r)
            else:
                m.d.comb += getattr(csrs, f"inc_{n}").eq(src[n])
        return m

"""04 - drive the SUSHI SoC from the host: load a build, run queries, read the counters.

`sushi.runtime.Device` is the one host API for the SoC (accelerator + framed host link + memory
standing in for DRAM).  Here it talks to the SoC simulated in Verilator through the same frames a
board gets over its UART; on a board only the first call changes:
`Device.open_serial("/dev/ttyUSB1")`.  Every query is checked against the golden model.

    .venv/bin/python examples/04_host_runtime.py [OUT_DIR]     (needs Verilator: ~30 s warm, minutes cold)
"""
import sys
import time
from pathlib import Path

from compiler import compile_onnx
from models import zoo
from models.train import load_digits_split
from sim.golden import COUNTER_NAMES, GoldenModel
from sushi import tools
from sushi.artifacts import load_build
from sushi.runtime import Device, Program
from sushi.verify import make_inputs

PRESET = "tiny-pb"          # 4x4 PEs; the SoC below gets 64 KiB of memory


def main(out_dir="out/examples/04", n_queries=3, **soc):
    tools.setup()
    # 1. a digits-sized CNN (1x1x8x8 -> 10, random weights), calibrated on digit scans
    calib = load_digits_split()["train"][0][:64]
    compile_onnx(zoo.tiny_cnn(), PRESET, Path(out_dir) / "build", calib=calib, progress=False)
    b = load_build(Path(out_dir) / "build")
    img, prog_base, weight_base = b.dram_image()     # programs + weights (activations zero)

    # 2. the device: builds (or reuses) the Verilated SoC and connects to it (``soc``: more
    #    sushi.runtime.sim.SimSoC options, e.g. timeout_cycles, the link's inter-byte timeout)
    with Device.open_sim(PRESET, mem_bytes=1 << 16, **soc) as dev:
        st = dev.status()
        print(f"device: {st['pe_rows']}x{st['pe_cols']} PEs, ISA v{st['isa_version']}, "
              f"{st['mem_bytes']:,} bytes of memory")
        t0 = time.perf_counter()
        dev.write_mem(0, bytes(img))                 # the whole DRAM image, in 256-byte frames
        load_s = time.perf_counter() - t0

        # 3. queries: Program says where the program, its input and its output are
        prog = Program.from_build(b)
        (in_addr, in_n), = prog.inputs
        (out_addr, out_n), = prog.outputs
        golden, ok, cycles = GoldenModel(b.cfg), True, []
        for i, x in enumerate(make_inputs(b, n_queries)):    # real digit scans
            g_img = bytearray(img)
            b.write_input(g_img, b.quantize_input(x[None]))  # HWC, channels padded to words
            res = dev.run(prog, bytes(g_img[in_addr:in_addr + in_n]))
            g = golden.run(g_img, prog_base, weight_base)
            same = res.outputs[0] == bytes(g_img[out_addr:out_addr + out_n]) and \
                all(res.counters[k] == getattr(g, k) for k in COUNTER_NAMES)
            ok &= same and res.error == 0
            cycles.append(res.counters["cycles"])
            print(f"query {i}: class {int(b.decode_output(res.outputs[0]).argmax())}, "
                  f"{res.counters['cycles']:,} cycles, {res.counters['w_rd_bytes']:,} weight bytes, "
                  f"{'bit-exact' if same else 'MISMATCH'} vs golden, {res.wall_s:.2f} s host time")
        counters = dev.read_counters()               # the CSRs after the last query
    print(f"image of {len(img):,} bytes loaded in {load_s:.2f} s; all queries bit-exact: {ok}")
    return dict(bit_exact=ok, queries=n_queries, cycles=cycles, image_bytes=len(img),
                load_s=load_s, last_counters=counters, isa_version=st["isa_version"])


if __name__ == "__main__":
    main(*sys.argv[1:2])

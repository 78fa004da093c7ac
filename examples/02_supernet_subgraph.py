"""02 - a weight-shared SuperNet, one weight image, and a SubGraph kept in the Persistent Buffer.

Train a quick elastic digits SuperNet (a few SubNets), compile it for `8x8-pb`: one shared weight
image, one program per SubNet, a catalog of SubGraphs (each with its LOADSG program) and the
latency table the scheduler reads.  Then, on the golden model, run the smallest SubNet on a real
test scan cold, load a SubGraph into the Persistent Buffer (PB) and run it again: same output
bytes, PB hits instead of DRAM weight reads.

    .venv/bin/python examples/02_supernet_subgraph.py [OUT_DIR]          (~30 s, no Verilator)
"""
import sys
from pathlib import Path


from compiler.supernet import compile_supernet
from models.train import CALIB_SIZE, load_digits_split, train
from sim.golden import GoldenModel
from sim.latency import write_latency_table
from sushi.artifacts import load_build


def main(out_dir="out/examples/02", epochs=4, n_subnets=4):
    out = Path(out_dir)
    data = load_digits_split()                     # sklearn digits, fixed 60/20/20 split, 1x8x8

    # 1. train (or reuse) the SuperNet: OUT/net/supernet.onnx, subnets/*.onnx, subnets.json
    if not (out / "net" / "subnets.json").is_file():
        train(out / "net", epochs=epochs, n_subnets=n_subnets, n_candidates=2 * n_subnets,
              progress=False, plot=False)

    # 2. one build for every SubNet; calibration scans set the int8 activation scales
    compile_supernet(out / "net" / "supernet.onnx", out / "net" / "subnets.json", "8x8-pb",
                     out / "build", calib=data["train"][0][:CALIB_SIZE], progress=False)
    b = load_build(out / "build")
    write_latency_table(b)                         # OUT/build/latency_table.json (example 03)
    w = b.manifest["supernet"]
    print(f"{len(b.program_names)} SubNets share one {w['weight_image_bytes']:,}-byte weight image "
          f"(they would need {w['sum_subnet_tile_bytes']:,} bytes apart); SubGraphs {b.subgraph_ids}")

    # 3. the smallest SubNet and the largest catalog SubGraph that helps it
    name = min(b.program_names, key=b.macs)
    sg = max((s for s in b.subgraph_ids if name in b.subgraph(s)["subnets"]),
             key=lambda s: b.subgraph(s)["tiles"])
    x, label = data["test"][0][:1], int(data["test"][1][0])
    img, prog_base, weight_base = b.dram_image(name)
    b.write_input(img, b.quantize_input(x, name), name)
    addr, n = b.output_region(name)

    # 4. ONE golden model: like the hardware, its PB persists from one program to the next
    gm = GoldenModel(b.cfg)
    def query():
        dram = bytearray(img)
        c = gm.run(dram, prog_base, weight_base)
        return c, bytes(dram[addr:addr + n])
    cold, out_cold = query()
    load = gm.run(bytearray(img), b.subgraph(sg)["base"], weight_base)   # LOADSG + SETRES program
    warm, out_warm = query()

    pred = int(b.decode_output(out_warm, name).argmax())
    fig = dict(subnet=name, subgraph=sg, sg_tiles=b.subgraph(sg)["tiles"], load_w_bytes=load.w_rd_bytes,
               same_output=out_cold == out_warm, prediction=pred, label=label,
               pb_hits_cold=cold.pb_hits, pb_hits=warm.pb_hits,
               dram_weight_bytes_cold=cold.w_rd_bytes, dram_weight_bytes=warm.w_rd_bytes,
               tile_bytes=b.cfg.tile_bytes, build=str(out / "build"))
    print(f"SubNet {name}: digit {label} -> predicted {pred}")
    print(f"load {sg} ({fig['sg_tiles']} tiles, {load.w_rd_bytes:,} bytes read once)")
    print(f"  DRAM weight bytes per query {cold.w_rd_bytes:,} -> {warm.w_rd_bytes:,}, "
          f"PB hits {cold.pb_hits} -> {warm.pb_hits}, output bytes "
          f"{'identical' if fig['same_output'] else 'DIFFER'}")
    return fig


if __name__ == "__main__":
    main(*sys.argv[1:2])

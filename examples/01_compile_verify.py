"""01 - compile your own CNN and check the accelerator computes it bit for bit.

PyTorch CNN -> ONNX -> SUSHI int8 build for the `tiny` preset (4x4 PEs) -> one input through
the integer golden model (the spec) and the Verilator RTL: every output byte and every counter
must agree.  The dequantized output is then compared with onnxruntime on the float model.

    .venv/bin/python examples/01_compile_verify.py [OUT_DIR]        (needs Verilator: ~1 min warm)
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from compiler import compile_onnx
from sim.golden import COUNTER_NAMES, GoldenModel
from sim.rtl import Job, RtlSim
from sushi import tools
from sushi.artifacts import load_build


def main(out_dir="out/examples/01"):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tools.setup()                                    # Verilator & co. from the venv on PATH

    # 1. a small CNN in PyTorch, exported to ONNX (batch 1, fixed input shape)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    with warnings.catch_warnings():                  # the TorchScript exporter is "legacy"
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(out / "cnn.onnx"), dynamo=False,
                          opset_version=13, input_names=["input"], output_names=["logits"])

    # 2. compile for the `tiny` preset; calibration images set the int8 activation scales
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 3, 16, 16)).astype(np.float32)
    compile_onnx(out / "cnn.onnx", "tiny", out / "build", calib=calib, progress=False)
    b = load_build(out / "build")

    # 3. one input: quantize it into the build's DRAM image (program + weights + activations)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    img, prog_base, weight_base = b.dram_image()
    b.write_input(img, b.quantize_input(x))
    addr, n = b.output_region()

    # 4. golden model: runs the program in place on the image and counts DRAM bytes, MACs, ...
    gimg = bytearray(img)
    gold = GoldenModel(b.cfg).run(gimg, prog_base, weight_base)
    gold_out = bytes(gimg[addr:addr + n])

    # 5. the Verilog accelerator in Verilator, same image, reading back the output tensor
    rtl = RtlSim(b.cfg).run(Job(dram_image=bytes(img), prog_base=prog_base,
                                weight_base=weight_base, read_back=[(addr, n)]))
    bytes_equal = rtl.regions[0] == gold_out
    counters_equal = all(rtl.counters[k] == getattr(gold, k) for k in COUNTER_NAMES)

    # 6. the float reference: dequantized accelerator output vs onnxruntime
    y = b.dequantize_output(b.decode_output(rtl.regions[0])).reshape(-1)
    sess = ort.InferenceSession(str(out / "cnn.onnx"), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": x})[0].reshape(-1)

    fig = dict(bit_exact=bytes_equal and counters_equal, output_bytes=n,
               rtl_cycles=int(rtl.counters["cycles"]), macs=b.macs(),
               dram_weight_bytes=gold.w_rd_bytes, onnx_max_abs_err=float(np.abs(y - ref).max()),
               onnx_range=float(np.abs(ref).max()), top1_agrees=bool(y.argmax() == ref.argmax()))
    print(f"golden vs RTL: {n} output bytes {'identical' if bytes_equal else 'DIFFER'}, "
          f"counters {'identical' if counters_equal else 'DIFFER'}")
    print(f"RTL: {fig['rtl_cycles']:,} cycles for {fig['macs']:,} MACs, "
          f"{fig['dram_weight_bytes']:,} weight bytes from DRAM")
    print(f"vs onnxruntime: max |err| {fig['onnx_max_abs_err']:.4f} on outputs up to "
          f"{fig['onnx_range']:.3f}, top-1 {'agrees' if fig['top1_agrees'] else 'differs'}")
    return fig


if __name__ == "__main__":
    main(*sys.argv[1:2])

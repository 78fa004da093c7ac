"""Random single-layer configurations, compiled, run on the golden model and on Verilator.

Every output byte and every counter of the RTL must equal the golden model's.  All layers of one
preset run in one simulator invocation (one Verilator build per preset).
"""
import numpy as np
import pytest

from compiler import compile_onnx
from sim.golden import COUNTER_NAMES, GoldenModel
from sim.rtl import Job, RtlSim
from sushi.artifacts import load_build
from sushi.config import PRESETS
from models import zoo

N_PER_PRESET = 30
PRESET_SEEDS = {"tiny": 1000, "8x8": 2000}


def _cases(preset, root):
    cfg = PRESETS[preset]
    cases = []
    for i in range(N_PER_PRESET):
        rng = np.random.default_rng(PRESET_SEEDS[preset] + i)
        model, desc = zoo.random_layer_model(rng)
        out = root / f"{preset}_{i}"
        compile_onnx(model, cfg, out)
        b = load_build(out)
        img, pb, wb = b.dram_image()
        x = rng.standard_normal(b.manifest["programs"]["main"]["input"]["shape"]).astype(np.float32)
        b.write_input(img, b.quantize_input(x), "main")
        gimg = bytearray(img)
        c = GoldenModel(cfg).run(gimg, pb, wb)
        addr, n = b.output_region()
        cases.append(dict(desc=desc, image=bytes(img), pb=pb, wb=wb, region=(addr, n),
                          golden=bytes(gimg[addr:addr + n]), counters=c.as_dict()))
    return cfg, cases


@pytest.fixture(scope="module", params=list(PRESET_SEEDS))
def layer_runs(request, tmp_path_factory):
    preset = request.param
    cfg, cases = _cases(preset, tmp_path_factory.mktemp(f"layers_{preset}"))
    sim = RtlSim(cfg)
    jobs = [Job(dram_image=c["image"], prog_base=c["pb"], weight_base=c["wb"], read_back=[c["region"]])
            for c in cases]
    res = sim.run_jobs(jobs)
    return preset, cases, res, sim, jobs, tmp_path_factory.mktemp(f"waves_{preset}")


@pytest.mark.rtl
@pytest.mark.xdist_group("rtl_layers")
def test_random_layers_bit_exact(layer_runs):
    preset, cases, results, sim, jobs, wdir = layer_runs
    assert len(results) == len(cases) == N_PER_PRESET
    failures = []
    for i, (c, r) in enumerate(zip(cases, results)):
        got, exp = r.regions[0], c["golden"]
        bad = int((np.frombuffer(got, np.uint8) != np.frombuffer(exp, np.uint8)).sum()) if len(got) == len(exp) else len(exp)
        diffs = {k: (c["counters"][k], r.counters[k]) for k in COUNTER_NAMES if c["counters"][k] != r.counters[k]}
        if bad or diffs or r.counters.get("error", 0):
            failures.append(f"{preset}#{i} {c['desc']}: {bad} mismatched bytes, counter diffs {diffs}, "
                            f"error {r.counters.get('error', 0)}")
    if failures:   # leave a waveform of the failing layers beside their simulator log
        bad = [jobs[int(f.split("#")[1].split()[0])] for f in failures]
        failures.append(f"waves of the failing layers: {sim.waves_for(bad, wdir)}")
    assert not failures, "\n".join(failures)
    kinds = {c["desc"]["kind"] for c in cases}
    assert len(kinds) >= 5, kinds

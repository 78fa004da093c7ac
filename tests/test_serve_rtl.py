"""RTL-in-the-loop serving: every served query runs on Verilator with a real digits test image."""
import numpy as np
import pytest

from compiler.supernet import compile_supernet
from models.train import CALIB_SIZE, SPLIT_SEED, load_digits_split, train
from scheduler.replay import DROPPED
from scheduler.tables import load_table
from scheduler.trace import generate
from sim.latency import write_latency_table
from sim.rtl_backend import serve_on_rtl
from sushi.artifacts import load_build


@pytest.mark.rtl
def test_serve_on_rtl_measures_every_query(tmp_path):
    res = train(tmp_path / "net", epochs=2, n_subnets=4, n_candidates=8, progress=False, plot=False)
    calib = load_digits_split(SPLIT_SEED)["train"][0][:CALIB_SIZE]
    compile_supernet(tmp_path / "net" / "supernet.onnx", res["manifest"], "8x8-pb", tmp_path / "b",
                     calib=calib, progress=False)
    table = load_table(write_latency_table(load_build(tmp_path / "b")))
    lat = table.latency
    trace = generate("bursty", rate_qps=0.8 / (lat.max() / 1e3), n=24, seed=3,
                     slo_mix=f"{2 * lat.max():.4f}:1")
    out = serve_on_rtl(table, trace, tmp_path / "b", ["sushi", "no-pb"])
    for p, rr in out.items():
        m = rr.metrics()
        assert m["served"] + m["dropped"] == 24
        assert rr.notes["rtl_unmeasured_calls"] == 0, rr.notes
        assert rr.notes["rtl_queries"] >= m["served"] > 0
        # the performance model is cycle-exact: the RTL's latencies equal the table's
        assert rr.notes["rtl_vs_model_exact_fraction"] == 1.0, rr.notes
        assert m["served_accuracy_measured"] is not None and 0.0 <= m["served_accuracy_measured"] <= 1.0
        assert np.all(rr.correct[rr.status != DROPPED] >= 0)

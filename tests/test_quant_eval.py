"""int8 accuracy of every SubNet: integer executor == golden model, RTL bit-exact on a sample."""
import json

import pytest

from models.quant_eval import evaluate_quantized
from models.subnets import load_subnets
from models.train import train


@pytest.mark.rtl
def test_quantized_accuracy_written_to_manifest(tmp_path):
    res = train(tmp_path, epochs=3, n_subnets=4, n_candidates=8, progress=False, plot=False)
    q = evaluate_quantized(res["manifest"], cfg="8x8", golden_sample=6, rtl_sample=2, progress=False)
    man = load_subnets(res["manifest"])
    raw = json.loads((tmp_path / "subnets.json").read_text())
    assert {s["name"] for s in raw["subnets"]} == set(q)
    for s in raw["subnets"]:
        rec = s["quantized"]
        assert 0.0 <= rec["accuracy"] <= 1.0 and rec["golden_checked"] == 6 and rec["size"] == 360
        assert rec["drop_pp"] == pytest.approx(100 * (s["accuracy"] - rec["accuracy"]), abs=1e-3)
    lg, sm = man.largest().name, man.smallest().name
    for name in (lg, sm):
        assert q[name]["rtl"]["n"] == 2 and q[name]["rtl"]["bit_exact"] is True
    assert q[lg]["latency_ms_predicted"] > q[sm]["latency_ms_predicted"] > 0
    assert (tmp_path / "pareto_latency.png").stat().st_size > 1000

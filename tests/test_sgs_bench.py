"""bench/sgs.py on the digits SuperNet with the performance model only (quick, no RTL, no ResNet50)."""
import json

import pytest

from bench.sgs import FORMAT, run_sgs


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    d = tmp_path_factory.mktemp("sgs")
    r = run_sgs(d / "work", d / "sgs.json", quick=True, r50=False, rtl=False, digits_pb_sizes=(64, 2048),
                log=lambda s: None)
    return r, json.loads((d / "sgs.json").read_text())


def test_json_structure(res):
    r, j = res
    assert j["format"] == FORMAT and j["version"] == 1 and j["quick"] is True
    dg = j["digits"]
    for k in ("config", "baseline_config", "subnets", "subgraphs", "bandwidths", "model"):
        assert k in dg
    assert dg["baseline_config"]["pb_tiles"] == 0
    assert dg["baseline_config"]["act_buf_words"] == min(65536, dg["config"]["act_buf_words"]
                                                         + dg["config"]["derived"]["pb_bytes"] // dg["config"]["pe_cols"])
    assert dg["subgraphs"], "the digits catalog has SubGraphs"
    for bw in dg["bandwidths"]:
        rows = dg["model"][bw]
        assert set(rows) == set(dg["subnets"])
        for row in rows.values():
            for k in ("cycles", "latency_ms", "w_rd_bytes", "offchip_bytes", "offchip_uj", "offchip_weight_uj"):
                assert row["none"][k] > 0 and row["baseline_nopb"][k] > 0
            assert set(row["subgraphs"]) == set(dg["subgraphs"])
            for sg in row["subgraphs"].values():
                assert set(sg["vs_baseline"]) >= {"latency_reduction", "weight_energy_reduction"}


def test_resident_subgraph_never_adds_offchip_bytes(res):
    _, j = res
    dg = j["digits"]
    contained = 0
    for bw in dg["bandwidths"]:
        for name, row in dg["model"][bw].items():
            none = row["none"]
            for sid, sg in row["subgraphs"].items():
                assert sg["offchip_bytes"] <= none["offchip_bytes"], (bw, name, sid)
                assert sg["w_rd_bytes"] <= none["w_rd_bytes"], (bw, name, sid)
                if name in dg["subgraphs"][sid]["subnets"]:
                    contained += 1
                    assert sg["contains"]
                    assert sg["offchip_bytes"] < none["offchip_bytes"], (bw, name, sid)
                    assert sg["offchip_bytes"] < row["baseline_nopb"]["offchip_bytes"], (bw, name, sid)
                    assert sg["pb_hits"] > 0
    assert contained > 0, "some SubNet contains some SubGraph"


def test_pb_size_curve_and_targets(res):
    """The gain grows with the PB; with a PB that holds a SubNet's whole weight set only its
    requantization records still come from DRAM (>= 80 % less weight energy for the smallest), while
    a PB of 64 tiles cannot hold any SubNet (< 80 %)."""
    _, j = res
    dg = j["digits"]
    pts = {p["pb_tiles"]: p for p in dg["curve"] if p["bandwidth"] == "2"}
    assert set(pts) == {64, 2048}
    small, big = pts[64], pts[2048]
    assert big["n_subnets_covered"] == big["n_subnets"] > 0
    assert big["weight_energy_reduction"]["mean"] > small["weight_energy_reduction"]["mean"]
    assert big["latency_reduction"]["mean"] > small["latency_reduction"]["mean"] > 0
    assert big["weight_energy_reduction"]["max"] >= 0.80 > small["weight_energy_reduction"]["max"]
    t = {x["target"].split(" (")[0]: x for x in j["targets"] if x["part"] == "digits"}
    w = t[">= 80 % less off-chip weight energy"]
    assert w["met"] == (w["best_mean"] >= 0.80) and w["best_mean"] == big["weight_energy_reduction"]["mean"]
    assert j["plot"] and j["plot"].endswith(".png")

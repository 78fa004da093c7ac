"""Scheduler: traces, latency tables, SushiSched, baselines, replay conservation, CLI errors (fast)."""
import argparse
import json

import numpy as np
import pytest

from scheduler import (POLICIES, SchedulerError, Trace, generate, load_table, make_policy, parse_trace, replay,
                       synthetic_table, validate_table)
from scheduler.backend import LoadResult, ModelBackend, RunResult
from scheduler.commands import JSON_KEYS, add_commands
from scheduler.replay import DROPPED, MET, REASONS


@pytest.fixture(scope="module")
def table():
    return synthetic_table()


# ---------------------------------------------------------------- traces
@pytest.mark.parametrize("text,line,words", [
    ("arrival_s,slo_ms\n0.0,5\n0.1,abc\n", 3, "slo_ms: not a number"),
    ("arrival_s,slo_ms\n0.0,5\n0.1,0\n", 3, "slo_ms: must be > 0"),
    ("arrival_s,slo_ms\n0.0,-2\n", 2, "slo_ms: must be > 0"),
    ("arrival_s,slo_ms\n0.5,5\n0.1,5\n", 3, "earlier than the previous"),
    ("arrival_s,slo_ms\n0.0,5,3\n", 2, "expected 2 columns"),
    ("arrival_s,slo_ms,min_accuracy\n0.0,5,1.5\n", 2, "min_accuracy: must be in 0..1"),
    ("arrival,slo\n0,5\n", 1, "header must be"),
    ("arrival_s,slo_ms\n-1,5\n", 2, "arrival_s: must be >= 0"),
    ("arrival_s,slo_ms\n0,inf\n", 2, "must be finite"),
])
def test_trace_errors_name_line(text, line, words):
    with pytest.raises(SchedulerError) as e:
        parse_trace(text, "t.csv")
    assert f"t.csv:{line}:" in str(e.value) and words in str(e.value)


def test_trace_roundtrip_with_floor(tmp_path):
    tr = generate("poisson", rate_qps=100, n=50, seed=3, floor=0.75, floor_frac=0.5)
    p = tr.write(tmp_path / "t.csv")
    back = parse_trace(p.read_text(), "t.csv")
    np.testing.assert_allclose(back.arrival_s, tr.arrival_s, atol=1e-9)
    np.testing.assert_allclose(back.slo_ms, tr.slo_ms, rtol=1e-5)
    assert np.array_equal(np.isnan(back.min_accuracy), np.isnan(tr.min_accuracy))
    assert parse_trace("arrival_s,slo_ms\n# comment\n0,5\n\n1,6\n").slo_ms.tolist() == [5, 6]


@pytest.mark.parametrize("kind,kw,cv", [("poisson", {}, 1.0), ("gamma", {"cv": 3.0}, 3.0), ("gamma", {"cv": 0.5}, 0.5)])
def test_generator_rate_and_cv(kind, kw, cv):
    tr = generate(kind, rate_qps=500.0, n=60000, seed=1, **kw)
    ia = np.diff(tr.arrival_s)
    assert tr.rate_qps == pytest.approx(500.0, rel=0.05)
    assert ia.std() / ia.mean() == pytest.approx(cv, rel=0.08)


def test_mmpp_and_diurnal_rate():
    m = generate("mmpp", rate_qps=400.0, n=60000, seed=2, burst=5, high_frac=0.2, mean_dwell_s=0.5)
    assert m.rate_qps == pytest.approx(400.0, rel=0.1)
    ia = np.diff(m.arrival_s)
    assert ia.std() / ia.mean() > 1.1                          # burstier than Poisson
    d = generate("diurnal", rate_qps=300.0, duration_s=60.0, seed=3, period_s=20.0, amplitude=0.8)
    assert d.rate_qps == pytest.approx(300.0, rel=0.1)
    ph = (d.arrival_s % 20.0) < 10.0                           # sin > 0 half carries more
    assert ph.mean() > 0.6


def test_slo_mix():
    tr = generate("poisson", rate_qps=100, n=20000, seed=0, slo_mix="2:1,8:3")
    assert set(np.unique(tr.slo_ms)) == {2.0, 8.0}
    assert (tr.slo_ms == 8).mean() == pytest.approx(0.75, abs=0.02)
    with pytest.raises(SchedulerError, match="not VALUE_MS:WEIGHT"):
        generate("poisson", rate_qps=100, n=10, slo_mix="2;1")


# ---------------------------------------------------------------- tables
def test_table_roundtrip_and_errors(tmp_path, table):
    p = table.write(tmp_path / "latency_table.json")
    t2 = load_table(tmp_path)
    np.testing.assert_allclose(t2.latency, table.latency)
    obj = json.loads(p.read_text())
    name = next(iter(obj["subnets"]))
    bad = json.loads(p.read_text()); bad["subnets"][name]["accuracy"] = 1.5
    with pytest.raises(SchedulerError, match=rf"x.json: subnets.{name}.accuracy: must be <= 1"):
        validate_table(bad, "x.json")
    bad = json.loads(p.read_text()); del bad["latency_ms"][name]["none"]
    with pytest.raises(SchedulerError, match=rf"x.json: latency_ms.{name}: missing 'none'"):
        validate_table(bad, "x.json")
    bad = json.loads(p.read_text()); bad["latency_ms"][name]["sg_nope"] = 1.0
    with pytest.raises(SchedulerError, match="unknown SubGraph 'sg_nope'"):
        validate_table(bad, "x.json")
    bad = json.loads(p.read_text()); bad["format"] = "other"
    with pytest.raises(SchedulerError, match="x.json: format"):
        validate_table(bad, "x.json")
    bad = json.loads(p.read_text()); g = next(iter(bad["subgraphs"])); bad["subgraphs"][g]["bytes"] = bad["pb_bytes"] + 1
    with pytest.raises(SchedulerError, match=f"subgraphs.{g}.bytes: .* does not fit the PB"):
        validate_table(bad, "x.json")


def tiny_table(**over):
    """Two SubNets, one SubGraph that only the big one contains."""
    obj = {"format": "sushi-latency", "version": 1, "clock_mhz": 100.0, "pb_bytes": 1000,
           "subnets": {"big": {"accuracy": 0.9, "macs": 100}, "small": {"accuracy": 0.7, "macs": 10}},
           "subgraphs": {"g": {"bytes": 800, "tiles": 8, "subnets": ["big"], "load_ms": 0.5, "load_bytes": 800}},
           "latency_ms": {"big": {"none": 10.0, "g": 6.0}, "small": {"none": 3.0}},
           "offchip_bytes": {"big": {"none": 1000, "g": 200}, "small": {"none": 300}},
           "offchip_energy_uj": {"big": {"none": 10.0, "g": 2.0}, "small": {"none": 3.0}}}
    obj.update(over)
    return validate_table(obj, "tiny")


# ---------------------------------------------------------------- SushiSched choices
def one(slo, arrival=0.0, floor=None):
    return Trace(np.atleast_1d(arrival), np.atleast_1d(slo),
                 None if floor is None else np.atleast_1d(floor))


def test_most_accurate_feasible_uses_resident_latency():
    t = tiny_table()
    p = make_policy("fixed", t, fixed_sg="g")             # g resident: big takes 6 ms
    r = replay(t, one(7.0), p)
    assert t.subnets[r.subnet[0]] == "big" and r.status[0] == MET
    r = replay(t, one(7.0), "no-pb")                       # nothing resident: big takes 10 ms
    assert t.subnets[r.subnet[0]] == "small"
    r = replay(t, one(2.0), "no-pb")                       # nothing fits: dropped
    assert r.status[0] == DROPPED and REASONS[r.reason[0]] == "infeasible"
    r = replay(t, one(2.0), "no-pb", fallback="fastest")   # or the fastest, late
    assert t.subnets[r.subnet[0]] == "small" and r.status[0] != MET


def test_queueing_counts_in_predicted_finish():
    t = tiny_table()
    p = make_policy("fixed", t, fixed_sg="g")
    # second query arrives while the first (big, 6 ms) runs: 3 ms of queueing leaves 5 ms -> small
    r = replay(t, Trace(np.array([0.0, 0.003]), np.array([7.0, 8.0])), p)
    assert [t.subnets[s] for s in r.subnet] == ["big", "small"]
    assert r.start_ms[1] == pytest.approx(6.0)


def test_accuracy_floor():
    t = tiny_table()
    r = replay(t, one(4.0, floor=0.8), "no-pb")            # small fits but is below the floor
    assert r.status[0] == DROPPED and REASONS[r.reason[0]] == "infeasible"
    r = replay(t, one(4.0, floor=0.95), "no-pb")           # nothing is accurate enough
    assert REASONS[r.reason[0]] == "accuracy_floor"
    r = replay(t, one(50.0, floor=0.8), "no-pb")
    assert t.subnets[r.subnet[0]] == "big"


def test_swap_cost_accounted():
    t = tiny_table()
    # many queries that only "big" with g resident can serve: sushi loads g once, pays 0.5 ms + 800 B
    n = 600
    tr = Trace(np.arange(n) * 0.02, np.full(n, 7.0))
    p = make_policy("sushi", t, np.full(n, 3.5), np.zeros(n), period=64)   # offline choice sees tight SLOs
    p.initial = 0                                                          # start with an empty PB
    r = replay(t, tr, p)
    m = r.metrics()
    assert m["swaps"] == 1 and r.swaps[0][3] == 1
    t_swap, _, frm, to, busy, nbytes, energy = r.swaps[0]
    assert (frm, busy, nbytes) == (0, 0.5, 800)
    after = np.flatnonzero(r.start_ms >= t_swap)
    first = after[np.argmin(r.start_ms[after])]
    assert r.start_ms[first] == pytest.approx(t_swap + 0.5)               # the load kept the accelerator busy
    assert m["swap_bytes"] == 800
    served_bytes = r.offchip_bytes.sum()
    assert m["offchip_bytes_per_query"] * m["served"] == pytest.approx(served_bytes + 800)
    assert t.subnets[r.subnet[-1]] == "big"


# ---------------------------------------------------------------- replay
@pytest.mark.parametrize("policy", POLICIES)
def test_conservation_10x_overload_bounded_queue(table, policy):
    cap_qps = 1000.0 / table.latency[0].min()
    tr = generate("gamma", rate_qps=10 * cap_qps, n=20000, cv=3.0, seed=5)
    r = replay(table, tr, policy, queue_cap=16)
    m = r.metrics()
    assert m["served"] + m["dropped"] == len(tr) == m["arrivals"]
    assert sum(m["drop_reasons"].values()) == m["dropped"]
    assert ((r.status == DROPPED) == (r.subnet < 0)).all()
    if policy != "oracle":
        assert m["drop_reasons"]["queue_full"] > 0
    assert set(JSON_KEYS) <= set(m)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_runs(table, policy):
    tr = generate("mmpp", rate_qps=800, n=3000, seed=1)
    m = replay(table, tr, policy).metrics()
    assert 0 < m["slo_attainment"] <= 1 and 0 < m["served_accuracy"] <= 1


def test_multiple_accelerators_and_orderings(table):
    tr = generate("gamma", rate_qps=3000, n=5000, seed=2)
    m1 = replay(table, tr, "sushi").metrics()
    m2 = replay(table, tr, "sushi", n_accel=2).metrics()
    assert m2["slo_attainment"] >= m1["slo_attainment"]
    assert m2["served"] + m2["dropped"] == len(tr)
    o = replay(table, tr, "oracle").metrics()
    for p in ("sushi", "no-pb", "slackfit", "static-max"):
        assert replay(table, tr, p).metrics()["slo_attainment"] <= o["slo_attainment"] + 1e-12


def test_backend_protocol_predictions(table):
    class Labelled(ModelBackend):      # a backend that returns real predictions (e.g. RTL-in-the-loop)
        name = "labelled"

        def run(self, subnet, resident_sg, query=None):
            r = super().run(subnet, resident_sg, query)
            return RunResult(r.latency_ms * 1.01, r.offchip_bytes, r.energy_uj, prediction=query % 3, label=0)

    tr = generate("poisson", rate_qps=200, n=300, seed=4)
    r = replay(table, tr, "sushi", Labelled(table))
    m = r.metrics()
    assert m["backend"] == "labelled" and m["served_accuracy_measured"] == pytest.approx(
        (r.correct[r.status == MET] == 1).mean())
    assert isinstance(ModelBackend(table).load(table.sg_ids[0]), LoadResult)


# ---------------------------------------------------------------- CLI
def parser():
    p = argparse.ArgumentParser(prog="sushi")
    add_commands(p.add_subparsers(dest="command"))
    return p


def run_cli(argv):
    args = parser().parse_args(argv)
    return args.func(args)


def test_cli_trace_and_serve(tmp_path, table):
    table.write(tmp_path / "latency_table.json")
    assert run_cli(["trace", "bursty", "-o", str(tmp_path / "t.csv"), "--rate", "800", "--queries", "2000"]) == 0
    assert run_cli(["serve", "--trace", str(tmp_path / "t.csv"), "--build", str(tmp_path),
                    "--json", str(tmp_path / "r.json")]) == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    assert set(rep) == set(POLICIES)
    for m in rep.values():
        assert set(JSON_KEYS) <= set(m)
    assert (tmp_path / "r_latency_cdf.png").exists() and (tmp_path / "r_accuracy_slo.png").exists()


def test_cli_user_errors_are_scheduler_errors(tmp_path, table):
    """The CLI maps SchedulerError to exit status 2."""
    (tmp_path / "bad.csv").write_text("arrival_s,slo_ms\n0,5\n1,-3\n")
    table.write(tmp_path / "latency_table.json")
    with pytest.raises(SchedulerError, match="bad.csv:3: slo_ms"):
        run_cli(["serve", "--trace", str(tmp_path / "bad.csv"), "--build", str(tmp_path)])
    (tmp_path / "ok.csv").write_text("arrival_s,slo_ms\n0,5\n")
    with pytest.raises(SchedulerError, match="nope is not a directory"):
        run_cli(["serve", "--trace", str(tmp_path / "ok.csv"), "--build", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SchedulerError, match="latency_table.json does not exist"):
        run_cli(["serve", "--trace", str(tmp_path / "ok.csv"), "--build", str(tmp_path / "empty")])
    (tmp_path / "b2").mkdir()
    (tmp_path / "b2" / "latency_table.json").write_text('{"format": "sushi-latency", "version": 1}')
    with pytest.raises(SchedulerError, match="missing field 'clock_mhz'"):
        run_cli(["serve", "--trace", str(tmp_path / "ok.csv"), "--build", str(tmp_path / "b2")])
    with pytest.raises(SchedulerError, match="rate must be > 0"):
        run_cli(["trace", "poisson", "-o", str(tmp_path / "x.csv"), "--rate", "0", "--queries", "5"])


def test_cli_exit_status_2_through_main(tmp_path, capsys):
    """Through the real CLI, bad input exits with status 2."""
    from sushi import cli
    (tmp_path / "bad.csv").write_text("arrival_s,slo_ms\n0,abc\n")
    assert cli.main(["serve", "--trace", str(tmp_path / "bad.csv"), "--build", str(tmp_path)]) == 2

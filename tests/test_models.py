"""models/: the elastic SuperNet, its export, the SubNet manifest and its validator, the BYO interface."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from models.interface import ElasticChoiceError, ElasticSupernet, onnx_stats, validate_choice
from models.subnets import ManifestError, load_subnets, plot_pareto
from models.supernet import DEFAULT_CONFIG, TINY_CONFIG, ElasticCNN
from models.train import load_digits_split, train

ROOT = Path(__file__).resolve().parents[1]
# the BYO example calls torch's TorchScript ONNX exporter (dynamo=False) directly
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ALLOWED_OPS = {"Conv", "BatchNormalization", "Relu", "Clip", "Add", "MaxPool", "AveragePool", "GlobalAveragePool",
               "ReduceMean", "Flatten", "Gemm", "MatMul", "Identity", "Reshape"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick training run (1 epoch on a subset) of the real SuperNet, exported with 5 SubNets."""
    out = tmp_path_factory.mktemp("models") / "run"
    res = train(out, epochs=1, seed=0, progress=False, n_subnets=5, n_candidates=6, max_train=192, plot=False)
    ck = torch.load(out / "supernet.pt", weights_only=False)
    net = ElasticCNN(ck["config"])
    net.load_state_dict(ck["state_dict"])
    net.eval()
    return out, res, net


def _inits(path) -> dict:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_protocol_and_space():
    net = ElasticCNN(TINY_CONFIG)
    assert isinstance(net, ElasticSupernet)
    space = net.elastic_space()
    assert space["stages"][0] == {"depth": [1, 2], "width": [8, 12], "expand": [0.5, 1.0], "kernel": [3, 5]}
    ch = {"stages": [{"depth": 2, "width": 8, "expand": 0.5, "kernel": [3, 5]},
                     {"depth": 1, "width": 16, "expand": [1.0], "kernel": 3}]}
    net.set_active(ch)
    assert net.active_choice() == {"stages": [{"depth": 2, "width": 8, "expand": [0.5, 0.5], "kernel": [3, 5]},
                                              {"depth": 1, "width": 16, "expand": [1.0], "kernel": [3]}]}
    assert DEFAULT_CONFIG.stages[0].depth == (1, 2, 3)


@pytest.mark.parametrize("stage0, message", [
    ({"depth": 3, "width": 8, "expand": 0.5, "kernel": 3},
     "choice.stages[0].depth = 3 is not in the elastic space [1, 2]"),
    ({"depth": 2, "width": 10, "expand": 0.5, "kernel": 3},
     "choice.stages[0].width = 10 is not in the elastic space [8, 12]"),
    ({"depth": 2, "width": 8, "expand": 0.5, "kernel": [3, 7]},
     "choice.stages[0].kernel[1] = 7 is not in the elastic space [3, 5]"),
    ({"depth": 2, "width": 8, "expand": [0.5], "kernel": 3},
     "choice.stages[0].expand has 1 values but depth is 2 (one per active block, or a single value)"),
    ({"depth": 2, "width": 8, "kernel": 3},
     "choice.stages[0] is missing 'expand' (the elastic space has ['depth', 'expand', 'kernel', 'width'])"),
    ({"depth": 2, "width": 8, "expand": 0.5, "kernel": 3, "groups": 2},
     "choice.stages[0] has 'groups', which is not an elastic dimension of this stage "
     "(the space has ['depth', 'expand', 'kernel', 'width'])"),
])
def test_set_active_outside_space(stage0, message):
    net = ElasticCNN(TINY_CONFIG)
    before = net.active_choice()
    ok = {"depth": 1, "width": 12, "expand": 1.0, "kernel": 5}
    with pytest.raises(ElasticChoiceError) as e:
        net.set_active({"stages": [stage0, ok]})
    assert str(e.value) == message
    assert net.active_choice() == before          # a rejected choice changes nothing
    with pytest.raises(ElasticChoiceError) as e:
        net.set_active({"stages": [ok]})
    assert str(e.value) == "choice.stages has 1 stages; the elastic space has 2"


def test_subnet_weights_are_slices(trained):
    """Every initializer of every exported SubNet is a slice of the SuperNet's tensor of the same name:
    output-channel prefix, input-channel prefix, kernel centre crop.  BN running stats are per SubNet."""
    out, _, net = trained
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    m = load_subnets(out / "subnets.json")
    for s in [m.largest(), m.smallest(), *m.subnets]:
        model = onnx.load(str(s.onnx))
        bn_stats = {n.input[i] for n in model.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
        checked = 0
        for name, arr in _inits(s.onnx).items():
            assert name in sd, f"{s.name}: initializer {name} is not a SuperNet tensor"
            if name in bn_stats:
                continue
            full = sd[name]
            if arr.ndim == 4:
                o, i, k, _ = arr.shape
                off = (full.shape[2] - k) // 2
                ref = full[:o, :i, off:off + k, off:off + k]
            elif arr.ndim == 2:
                ref = full[:arr.shape[0], :arr.shape[1]]
            else:
                ref = full[:arr.shape[0]]
            np.testing.assert_array_equal(arr, ref, err_msg=f"{s.name}: {name}")
            checked += 1
        assert checked >= 8
    # the largest SubNet uses every learned weight, uncropped
    big = _inits(out / "supernet.onnx")
    for name, p in net.named_parameters():
        np.testing.assert_array_equal(big[name], p.detach().numpy(), err_msg=name)
    # and a 3x3 SubNet kernel is the centre of the 5x5 weight
    small = _inits(m.smallest().onnx)
    w5 = sd["stages.0.0.conv1.weight"]
    w3 = small["stages.0.0.conv1.weight"]
    assert w5.shape[2:] == (5, 5) and w3.shape[2:] == (3, 3)
    np.testing.assert_array_equal(w3, w5[:w3.shape[0], :w3.shape[1], 1:4, 1:4])


def test_onnx_equals_pytorch(trained, tmp_path):
    import onnxruntime as ort
    out, _, net = trained
    data = load_digits_split()
    calib = torch.from_numpy(data["train"][0])
    x = data["test"][0][:16]
    import random
    for ch in (net.smallest_choice(), net.random_choice(random.Random(3)), net.largest_choice()):
        net.recalibrate_bn(calib, ch)
        path = net.export_subnet(ch, tmp_path / "s.onnx")
        model = onnx.load(str(path))
        assert {n.op_type for n in model.graph.node} <= ALLOWED_OPS
        assert [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input] == \
            [("input", [1, 1, 8, 8])]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
        with torch.no_grad():
            ref = net.forward_choice(torch.from_numpy(x), ch).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        # MACs from the ONNX graph equal the analytic count
        st = onnx_stats(path)
        assert st == net.choice_stats(ch)


def test_export_manifest(trained):
    out, res, net = trained
    m = load_subnets(out / "subnets.json")
    assert res["n_subnets"] == len(m.subnets) == 5
    assert m.input_name == "input" and m.input_shape == (1, 1, 8, 8)
    assert m.evaluation["size"] == 360 and m.evaluation["seed"] == 0 and m.evaluation["split"] == "test"
    assert m.largest().choice == net.largest_choice() and m.smallest().choice == net.smallest_choice()
    for s in m.subnets:
        meta = {p.key: p.value for p in onnx.load(str(s.onnx)).metadata_props}
        assert meta["sushi.supernet_fingerprint"] == m.fingerprint == net.fingerprint()
        assert json.loads(meta["sushi.choice"]) == s.choice and meta["sushi.subnet"] == s.name
        assert 0.0 <= s.accuracy <= 1.0
    assert (out / "supernet.pt").is_file()


def _mutate(trained, tmp_path, fn) -> Path:
    src = trained[0]
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    raw = json.loads((dst / "subnets.json").read_text())
    fn(raw, dst)
    (dst / "subnets.json").write_text(json.dumps(raw))
    return dst / "subnets.json"


def test_manifest_errors(trained, tmp_path):
    m = load_subnets(trained[0] / "subnets.json")
    name = m.subnets[1].name

    def err(fn) -> str:
        path = _mutate(trained, tmp_path / str(len(list(tmp_path.iterdir()))), fn)
        with pytest.raises(ManifestError) as e:
            load_subnets(path)
        return str(e.value), str(path)

    def drop_acc(raw, d):
        del raw["subnets"][1]["accuracy"]
    msg, P = err(drop_acc)
    assert msg == (f"{P}: SubNet '{name}': field 'accuracy' is missing "
                   "(measured top-1 accuracy on the evaluation split, a number in [0, 1])")

    def percent(raw, d):
        raw["subnets"][1]["accuracy"] = 97.5
    msg, P = err(percent)
    assert msg == (f"{P}: SubNet '{name}': field 'accuracy' must be a number in [0, 1] (a fraction, not a percent), "
                   "got 97.5")

    def depth4(raw, d):
        raw["subnets"][1]["choice"]["stages"][1]["depth"] = 4
    msg, P = err(depth4)
    assert msg == (f"{P}: SubNet '{name}': field 'choice': choice.stages[1].depth = 4 is not in the elastic "
                   "space [1, 2, 3]")

    def kernel7(raw, d):
        raw["subnets"][1]["choice"]["stages"][0]["kernel"][0] = 7
    msg, P = err(kernel7)
    assert msg == (f"{P}: SubNet '{name}': field 'choice': choice.stages[0].kernel[0] = 7 is not in the elastic "
                   "space [3, 5]")

    def missing_file(raw, d):
        (d / raw["subnets"][1]["onnx"]).unlink()
    msg, P = err(missing_file)
    rel = f"subnets/{name}.onnx"
    assert msg == (f"{P}: SubNet '{name}': field 'onnx': file {rel} does not exist "
                   f"(looked for {(Path(P).parent / rel).resolve()})")

    # an ONNX file of another SuperNet (same architecture and input, different weights)
    torch.manual_seed(123)
    other = ElasticCNN(DEFAULT_CONFIG)
    other_fp = other.fingerprint()

    def foreign(raw, d):
        from models.interface import stamp_onnx
        p = d / raw["subnets"][1]["onnx"]
        other.export_subnet(m.subnets[1].choice, p)
        stamp_onnx(p, other_fp, name)
    msg, P = err(foreign)
    assert msg == (f"{P}: SubNet '{name}': field 'onnx': {rel} belongs to another SuperNet (its metadata says "
                   f"{other_fp[:23]}..., the manifest's SuperNet is {m.fingerprint[:23]}...)")

    # an ONNX file with another input shape (a 28x28 model, no SUSHI metadata)
    def mnist_like(raw, d):
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 28, 28])])
        onnx.save(helper.make_model(g), str(d / raw["subnets"][1]["onnx"]))
    msg, P = err(mnist_like)
    assert msg == (f"{P}: SubNet '{name}': field 'onnx': {rel} has input 'input' of shape [1, 1, 28, 28], but the "
                   "SuperNet's input is 'input' of shape [1, 1, 8, 8]; it belongs to another SuperNet")

    def unstamped(raw, d):
        p = d / raw["subnets"][1]["onnx"]
        mdl = onnx.load(str(p))
        del mdl.metadata_props[:]
        onnx.save(mdl, str(p))
    msg, P = err(unstamped)
    assert msg.startswith(f"{P}: SubNet '{name}': field 'onnx': {rel} has no 'sushi.supernet_fingerprint' metadata")

    def typo(raw, d):
        raw["subnets"][1]["accuray"] = raw["subnets"][1]["accuracy"]
    msg, P = err(typo)
    assert msg == (f"{P}: SubNet '{name}': unknown field(s) ['accuray'] (allowed: ['accuracy', 'choice', 'macs', "
                   "'name', 'notes', 'onnx', 'params', 'quantized', 'weight_bytes'])")

    def version2(raw, d):
        raw["version"] = 2
    msg, P = err(version2)
    assert msg == f"{P}: field 'version' is 2; this SUSHI reads version 1"

    def dup(raw, d):
        raw["subnets"][2]["name"] = raw["subnets"][1]["name"]
    msg, P = err(dup)
    assert msg == f"{P}: SubNet '{name}': field 'name': the name is used twice"


def test_hand_written_manifest_without_fingerprint(trained, tmp_path):
    """A manifest written by hand (no fingerprint, scalar per-stage kernel/expand) validates."""
    def hand(raw, d):
        del raw["supernet"]["fingerprint"]
        del raw["training"]
        s = raw["subnets"][0]
        for st in s["choice"]["stages"]:
            st["kernel"], st["expand"] = st["kernel"][0], st["expand"][0]
        raw["subnets"] = [s]
    m = load_subnets(_mutate(trained, tmp_path, hand))
    assert len(m.subnets) == 1 and m.fingerprint is None
    assert isinstance(m.subnets[0].choice["stages"][0]["kernel"], list)


def test_pareto_plot(trained, tmp_path):
    m = load_subnets(trained[0] / "subnets.json")
    p = plot_pareto(m, tmp_path / "p.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    p2 = plot_pareto(m, tmp_path / "l.png", latency={s.name: s.macs / 1e6 for s in m.subnets})
    assert p2.stat().st_size > 1000


def test_validate_choice_generic_space():
    space = {"stages": [{"width": [4, 8], "kernel": [3, 5]}, {"width": [16, 32]}]}
    assert validate_choice(space, {"stages": [{"width": 4, "kernel": 3}, {"width": 32}]}) == \
        {"stages": [{"width": 4, "kernel": 3}, {"width": 32}]}
    with pytest.raises(ElasticChoiceError, match=re.escape(
            "choice.stages[0].kernel is a list but the stage has no elastic depth; give one value")):
        validate_choice(space, {"stages": [{"width": 4, "kernel": [3]}, {"width": 32}]})


def test_byo_doc_example_runs(tmp_path, monkeypatch):
    """docs/byo_supernet.md's example, with 1 epoch instead of 15."""
    text = (ROOT / "docs" / "byo_supernet.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[-1]
    assert "EPOCHS = 15" in code
    code = code.replace("EPOCHS = 15", "EPOCHS = 1")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "byo_supernet.md", "exec"), {"__name__": "byo"})
    m = load_subnets(tmp_path / "byo_out" / "subnets.json")
    assert len(m.subnets) == 8 and (tmp_path / "byo_out" / "pareto.png").is_file()
    assert m.largest().macs == 8 * 25 * 64 + 128 * 32 + 32 * 10

"""An OFA-style elastic CNN for 1x8x8 inputs (scikit-learn's handwritten digits).

    stem      Conv 3x3 (1 -> 12) + BN + ReLU                                       (fixed)
    stage s   `depth` residual basic blocks (active blocks = a prefix of the stage's blocks)
              block: Conv kxk (cin -> mid) BN ReLU, Conv kxk (mid -> width) BN, + shortcut, ReLU
              the first block of a stage has a projection shortcut (Conv 1x1, stride) + BN
              and carries the stage's stride; the others add their input unchanged.
    head      GlobalAveragePool, Flatten, Linear (width of the last stage -> 10)

Elastic dimensions (the SubNet's weights are always slices of the SuperNet's):

    depth   per stage: the first `depth` blocks are active
    width   per stage: output channels = a prefix of the SuperNet's output channels (BN on the same prefix);
            the next layer reads the same prefix of its input channels
    expand  per block: mid channels = round(expand * width), again a prefix
    kernel  per block: a k x k kernel is the centre k x k crop of the SuperNet's 5x5 weight (OFA-style,
            no kernel transform, so the exported weight is exactly the slice)

A *choice* (one SubNet) is JSON-able:

    {"stages": [{"depth": 2, "width": 16, "expand": [0.5, 1.0], "kernel": [3, 5]}, ...]}

`expand` and `kernel` are per block (a list of `depth` values; a single number means every block).
The ONNX export uses Conv (group 1), BatchNormalization, Relu, Add, GlobalAveragePool, Flatten, Gemm.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.interface import ElasticChoiceError, validate_choice

__all__ = ["StageSpec", "SupernetConfig", "ElasticCNN", "ElasticChoiceError", "choice_name", "count_choices",
           "DEFAULT_CONFIG", "TINY_CONFIG"]


@dataclass(frozen=True)
class StageSpec:
    width: tuple[int, ...]          # output-channel choices (ascending); the max is the SuperNet's
    depth: tuple[int, ...]          # block-count choices (ascending)
    expand: tuple[float, ...]       # mid = round(expand * width)
    kernel: tuple[int, ...]         # odd kernel sizes, centre crops of the largest
    stride: int = 1


@dataclass(frozen=True)
class SupernetConfig:
    name: str = "digits-ofa-cnn"
    in_channels: int = 1
    in_hw: int = 8
    n_classes: int = 10
    stem_width: int = 12
    stem_kernel: int = 3
    stages: tuple[StageSpec, ...] = field(default_factory=lambda: (
        StageSpec(width=(12, 16), depth=(1, 2, 3), expand=(0.5, 0.75, 1.0), kernel=(3, 5), stride=1),
        StageSpec(width=(24, 32), depth=(1, 2, 3), expand=(0.5, 0.75, 1.0), kernel=(3, 5), stride=2),
    ))

    def to_json(self) -> dict:
        return {"name": self.name, "in_channels": self.in_channels, "in_hw": self.in_hw,
                "n_classes": self.n_classes, "stem_width": self.stem_width, "stem_kernel": self.stem_kernel,
                "stages": [{"width": list(s.width), "depth": list(s.depth), "expand": list(s.expand),
                            "kernel": list(s.kernel), "stride": s.stride} for s in self.stages]}


DEFAULT_CONFIG = SupernetConfig()
#: a small space for fast tests
TINY_CONFIG = SupernetConfig(name="digits-ofa-cnn-tiny", stem_width=8, stages=(
    StageSpec(width=(8, 12), depth=(1, 2), expand=(0.5, 1.0), kernel=(3, 5), stride=1),
    StageSpec(width=(12, 16), depth=(1, 2), expand=(0.5, 1.0), kernel=(3, 5), stride=2),
))


def mid_channels(expand: float, width: int) -> int:
    return max(1, int(round(expand * width)))


def _fmt(v) -> str:
    return f"{v:g}".replace(".", "")


def choice_name(choice: dict) -> str:
    """A readable, unique name: per stage d<depth>w<width>e<expand..>k<kernel..>, stages joined by '_'.
    e.g. d2w16e05e10k3k5_d1w32e075k3"""
    parts = []
    for st in choice["stages"]:
        parts.append(f"d{st['depth']}w{st['width']}" + "".join(f"e{_fmt(e)}" for e in st["expand"])
                     + "".join(f"k{k}" for k in st["kernel"]))
    return "_".join(parts)


# ------------------------------------------------------------------ elastic layers

class ElasticConv2d(nn.Module):
    """Conv weight [out_max, in_max, kmax, kmax]; a SubNet uses [:out, :in, centre k x k]."""

    def __init__(self, in_max: int, out_max: int, kmax: int, stride: int = 1):
        super().__init__()
        self.in_max, self.out_max, self.kmax, self.stride = in_max, out_max, kmax, stride
        self.weight = nn.Parameter(torch.empty(out_max, in_max, kmax, kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def active_weight(self, cin: int, cout: int, k: int) -> torch.Tensor:
        off = (self.kmax - k) // 2
        return self.weight[:cout, :cin, off:off + k, off:off + k]

    def forward(self, x: torch.Tensor, cout: int, k: int) -> torch.Tensor:
        return F.conv2d(x, self.active_weight(x.shape[1], cout, k), None, self.stride, k // 2)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm on a channel prefix (weight, bias, running stats all sliced)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
                            self.training, factor, self.eps)


class ElasticBlock(nn.Module):
    def __init__(self, cin_max: int, width_max: int, expand_max: float, kmax: int, stride: int, projection: bool):
        super().__init__()
        mid = mid_channels(expand_max, width_max)
        self.conv1 = ElasticConv2d(cin_max, mid, kmax, stride)
        self.bn1 = ElasticBatchNorm2d(mid)
        self.conv2 = ElasticConv2d(mid, width_max, kmax, 1)
        self.bn2 = ElasticBatchNorm2d(width_max)
        nn.init.zeros_(self.bn2.weight)      # residual branch starts as identity ("zero-init last BN")
        self.projection = projection
        if projection:
            self.sc_conv = ElasticConv2d(cin_max, width_max, 1, stride)
            self.sc_bn = ElasticBatchNorm2d(width_max)

    def forward(self, x, width: int, expand: float, k: int):
        h = F.relu(self.bn1(self.conv1(x, mid_channels(expand, width), k)))
        h = self.bn2(self.conv2(h, width, k))
        sc = self.sc_bn(self.sc_conv(x, width, 1)) if self.projection else x
        return F.relu(h + sc)


# ------------------------------------------------------------------ the SuperNet

class ElasticCNN(nn.Module):
    """The SuperNet.  Implements models.interface.ElasticSupernet."""

    def __init__(self, cfg: SupernetConfig = DEFAULT_CONFIG):
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Conv2d(cfg.in_channels, cfg.stem_width, cfg.stem_kernel, 1, cfg.stem_kernel // 2, bias=False)
        self.stem_bn = nn.BatchNorm2d(cfg.stem_width)
        self.stages = nn.ModuleList()
        cin = cfg.stem_width
        for s in cfg.stages:
            blocks = nn.ModuleList()
            for b in range(max(s.depth)):
                blocks.append(ElasticBlock(cin if b == 0 else max(s.width), max(s.width), max(s.expand),
                                           max(s.kernel), s.stride if b == 0 else 1, projection=(b == 0)))
            self.stages.append(blocks)
            cin = max(s.width)
        self.classifier = nn.Linear(cin, cfg.n_classes)
        self._active = self.largest_choice()

    # ---- the interface
    def elastic_space(self) -> dict:
        return {"stages": [{"depth": list(s.depth), "width": list(s.width), "expand": list(s.expand),
                            "kernel": list(s.kernel)} for s in self.cfg.stages]}

    def set_active(self, choice: dict) -> None:
        self._active = validate_choice(self.elastic_space(), choice)

    def active_choice(self) -> dict:
        return json.loads(json.dumps(self._active))

    def export_subnet(self, choice: dict, path) -> Path:
        """Write the SubNet `choice` as ONNX (opset 13, input "input" 1x1x8x8, output "logits"), eval mode,
        with the current BatchNorm running statistics (call `recalibrate_bn` first)."""
        choice = validate_choice(self.elastic_space(), choice)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sub = self.materialize(choice).eval()
        x = torch.zeros(1, self.cfg.in_channels, self.cfg.in_hw, self.cfg.in_hw)
        # do_constant_folding=False keeps BatchNormalization as its own node: torch's eval peephole would
        # otherwise fold BN into the conv weights, and those would no longer be slices of the SuperNet's.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # the TorchScript exporter's deprecation notice
            torch.onnx.export(sub, (x,), str(path), dynamo=False, opset_version=13, input_names=["input"],
                              output_names=["logits"], do_constant_folding=False,
                              training=torch.onnx.TrainingMode.EVAL)
        _undo_initializer_dedup(path)
        return path

    # ---- choices
    def largest_choice(self) -> dict:
        return {"stages": [{"depth": max(s.depth), "width": max(s.width), "expand": [max(s.expand)] * max(s.depth),
                            "kernel": [max(s.kernel)] * max(s.depth)} for s in self.cfg.stages]}

    def smallest_choice(self) -> dict:
        return {"stages": [{"depth": min(s.depth), "width": min(s.width), "expand": [min(s.expand)] * min(s.depth),
                            "kernel": [min(s.kernel)] * min(s.depth)} for s in self.cfg.stages]}

    def random_choice(self, rng: random.Random) -> dict:
        out = []
        for s in self.cfg.stages:
            d = rng.choice(s.depth)
            out.append({"depth": d, "width": rng.choice(s.width), "expand": [rng.choice(s.expand) for _ in range(d)],
                        "kernel": [rng.choice(s.kernel) for _ in range(d)]})
        return {"stages": out}

    def uniform_choices(self):
        """Every choice whose blocks share one expand and one kernel per stage (the exported grid)."""
        per_stage = [list(itertools.product(s.depth, s.width, s.expand, s.kernel)) for s in self.cfg.stages]
        for combo in itertools.product(*per_stage):
            yield {"stages": [{"depth": d, "width": w, "expand": [e] * d, "kernel": [k] * d} for d, w, e, k in combo]}

    # ---- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_choice(x, self._active)

    def forward_choice(self, x: torch.Tensor, choice: dict) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        for blocks, st in zip(self.stages, choice["stages"]):
            for b in range(st["depth"]):
                x = blocks[b](x, st["width"], st["expand"][b], st["kernel"][b])
        x = x.mean((2, 3))
        w = self.classifier.weight[:, :x.shape[1]]
        return F.linear(x, w, self.classifier.bias)

    @torch.no_grad()
    def recalibrate_bn(self, x: torch.Tensor, choice: dict | None = None, batch_size: int = 2048) -> None:
        """Reset the BatchNorm statistics of the active prefix and re-estimate them on `x` (OFA-style).
        Runs in train mode with a cumulative average, then leaves the net in eval mode."""
        choice = self._active if choice is None else validate_choice(self.elastic_space(), choice)
        bns = [m for m in self.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [(m.momentum, m.training) for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None        # cumulative moving average over the calibration batches
        self.train()
        for i in range(0, len(x), batch_size):
            self.forward_choice(x[i:i + batch_size], choice)
        for m, (mom, _) in zip(bns, saved):
            m.momentum = mom
        self.eval()

    def materialize(self, choice: dict | None = None) -> nn.Module:
        """A static PyTorch module for `choice` whose tensors are copies of the SuperNet's slices,
        with the same parameter names as the SuperNet's state dict (used for ONNX export)."""
        choice = self._active if choice is None else validate_choice(self.elastic_space(), choice)
        return StaticSubnet(self, choice)

    def choice_stats(self, choice: dict) -> dict:
        """Analytic MACs, parameters (conv/linear weights and biases, BN affine) and int8 weight bytes
        (conv/linear weights only) of a SubNet, for batch 1."""
        choice = validate_choice(self.elastic_space(), choice)
        c, hw = self.cfg, self.cfg.in_hw
        macs = hw * hw * c.stem_width * c.in_channels * c.stem_kernel ** 2
        wts = c.stem_width * c.in_channels * c.stem_kernel ** 2
        bn = 2 * c.stem_width
        cin = c.stem_width
        for spec, st in zip(c.stages, choice["stages"]):
            for b in range(st["depth"]):
                s = spec.stride if b == 0 else 1
                ohw = (hw + s - 1) // s
                w, k, m = st["width"], st["kernel"][b], mid_channels(st["expand"][b], st["width"])
                layers = [(cin, m, k, ohw), (m, w, k, ohw)] + ([(cin, w, 1, ohw)] if b == 0 else [])
                for ci, co, kk, o in layers:
                    macs += o * o * co * ci * kk * kk
                    wts += co * ci * kk * kk
                    bn += 2 * co
                hw, cin = ohw, w
        macs += cin * c.n_classes
        wts += cin * c.n_classes
        return {"macs": macs, "params": wts + bn + c.n_classes, "weight_bytes": wts}

    def fingerprint(self) -> str:
        """sha256 over the architecture and the SuperNet's learned tensors (not the BN running stats)."""
        h = hashlib.sha256(json.dumps(self.cfg.to_json(), sort_keys=True).encode())
        for name, p in self.named_parameters():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return "sha256:" + h.hexdigest()


def _undo_initializer_dedup(path: Path) -> None:
    """torch's exporter merges initializers with equal values (e.g. the two BN biases of a projection
    block, which receive identical gradients) and re-creates one with an Identity node.  Give every
    SuperNet tensor its own initializer again, so each keeps its name and the graph has no Identity."""
    import onnx
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    keep = []
    changed = False
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            m.graph.initializer.append(t)
            changed = True
        else:
            keep.append(n)
    if changed:
        del m.graph.node[:]
        m.graph.node.extend(keep)
        onnx.save(m, str(path))


class _Block(nn.Module):
    def __init__(self, sup: ElasticBlock, cin: int, width: int, expand: float, k: int):
        super().__init__()
        m = mid_channels(expand, width)
        self.conv1 = _conv(sup.conv1, cin, m, k)
        self.bn1 = _bn(sup.bn1, m)
        self.conv2 = _conv(sup.conv2, m, width, k)
        self.bn2 = _bn(sup.bn2, width)
        if sup.projection:
            self.sc_conv = _conv(sup.sc_conv, cin, width, 1)
            self.sc_bn = _bn(sup.sc_bn, width)
        self.projection = sup.projection

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + (self.sc_bn(self.sc_conv(x)) if self.projection else x))


def _conv(sup: ElasticConv2d, cin: int, cout: int, k: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, sup.stride, k // 2, bias=False)
    conv.weight.data.copy_(sup.active_weight(cin, cout, k))
    return conv


def _bn(sup: nn.BatchNorm2d, c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=sup.eps)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn, name).data.copy_(getattr(sup, name)[:c])
    return bn


class StaticSubnet(nn.Module):
    def __init__(self, net: ElasticCNN, choice: dict):
        super().__init__()
        self.choice = choice
        self.stem = _conv_plain(net.stem)
        self.stem_bn = _bn(net.stem_bn, net.cfg.stem_width)
        self.stages = nn.ModuleList()
        cin = net.cfg.stem_width
        for blocks, st in zip(net.stages, choice["stages"]):
            ml = nn.ModuleList()
            for b in range(st["depth"]):
                ml.append(_Block(blocks[b], cin if b == 0 else st["width"], st["width"], st["expand"][b],
                                 st["kernel"][b]))
            self.stages.append(ml)
            cin = st["width"]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, net.cfg.n_classes)
        self.classifier.weight.data.copy_(net.classifier.weight[:, :cin])
        self.classifier.bias.data.copy_(net.classifier.bias)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        for ml in self.stages:
            for blk in ml:
                x = blk(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


def _conv_plain(sup: nn.Conv2d) -> nn.Conv2d:
    conv = nn.Conv2d(sup.in_channels, sup.out_channels, sup.kernel_size, sup.stride, sup.padding, bias=False)
    conv.weight.data.copy_(sup.weight)
    return conv


def count_choices(cfg: SupernetConfig = DEFAULT_CONFIG) -> int:
    """Number of distinct SubNets in the space (per-block expand and kernel)."""
    n = 1
    for s in cfg.stages:
        n *= sum(len(s.width) * (len(s.expand) * len(s.kernel)) ** d for d in s.depth)
    return n


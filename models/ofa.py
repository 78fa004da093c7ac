"""PyTorch builders of the two published Once-for-All (OFA) SuperNet families and their SubNets.

* :class:`OFAResNet50` -- OFA-ResNet50 (Cai et al., ICLR 2020; ``ofa_resnet50``): a 3-conv input stem
  with a residual block, max pooling, 4 stages of bottleneck blocks (base depth 2, 2, 4, 2 plus an
  elastic 0/1/2 extra blocks), elastic expand ratio {0.2, 0.25, 0.35} per block and elastic width
  multiplier {0.65, 0.8, 1.0} (per stem conv and per stage), "avgpool_conv" downsampling shortcuts,
  global average pooling (``x.mean(3, keepdim=True).mean(2, keepdim=True)``) and a linear classifier.
* :class:`OFAMobileNetV3` -- OFA-MobileNetV3 (``ofa_mbv3_d234_e346_k357_w1.0``): a 3x3 h-swish stem,
  a fixed first MBConv, 5 stages of MBConv blocks (elastic depth {2, 3, 4}, expand {3, 4, 6}, kernel
  {3, 5, 7}, squeeze-excite in stages 2, 4, 5, h-swish in stages 3-5), a final 1x1 expand, global
  pooling, a 1x1 feature-mix conv with h-swish and a linear classifier.

Both SuperNets keep the weights of the largest SubNet.  A SubNet is made of *slices* of them (output /
input channel prefixes, the centre crop of the 7x7 depthwise kernel, the first ``d`` blocks of a
stage) that share storage with the SuperNet: ``set_active(choice)`` selects one, ``forward`` runs it,
``active_subnet()`` returns it as a standalone ``nn.Module`` and ``export_subnet(choice, path,
dynamo=...)`` writes it as ONNX with the legacy TorchScript exporter (``dynamo=False``, opset 13 by
default) or the dynamo exporter (``dynamo=True``, opset 18).

Weights are random (seeded: Kaiming-normal convs, BatchNorm gamma / beta random, running statistics
random (``bn_stats="random"``) or, by default (``bn_stats="data"``), re-estimated on seeded random
images (:func:`random_images`) at the SuperNet's resolution through the largest SubNet as OFA does, so activations neither explode nor vanish and logits
depend on the input) or a user-supplied ``state_dict`` of the SuperNet (``load_state_dict``; the
parameter names follow this module).

The activations h-swish / h-sigmoid are written as in the OFA code (``x * relu6(x + 3) / 6``,
``relu6(x + 3) / 6``: the exporters decompose them into Add / Clip / Mul / Div) with ``act_impl="ofa"``
(default) or as ``nn.Hardswish`` / ``nn.Hardsigmoid`` (native ONNX HardSwish / HardSigmoid) with
``act_impl="native"``.
"""
from __future__ import annotations

import abc
import copy
import io
import os
import random as _random
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["OFAResNet50", "OFAMobileNetV3", "make_divisible", "export_module", "FAMILIES", "build_subnet",
           "random_images", "calibrate_bn"]


def make_divisible(v, divisor=8, min_val=None):
    """OFA's channel rounding: nearest multiple of divisor, at least min_val, never below 90% of v."""
    min_val = divisor if min_val is None else min_val
    new_v = max(min_val, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _val2list(v, n):
    if isinstance(v, (list, tuple)):
        if len(v) != n:
            raise ValueError(f"expected {n} values, got {len(v)}: {v}")
        return list(v)
    return [v] * n


# ---------------------------------------------------------------- activations

class HSwishOFA(nn.Module):
    """OFA's h-swish: x * relu6(x + 3) / 6."""

    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoidOFA(nn.Module):
    """OFA's h-sigmoid: relu6(x + 3) / 6."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


def _act(name: str, impl: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "h_swish":
        return nn.Hardswish() if impl == "native" else HSwishOFA()
    if name == "h_sigmoid":
        return nn.Hardsigmoid() if impl == "native" else HSigmoidOFA()
    if name is None or name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


# ---------------------------------------------------------------- shared-storage slicing

def _share(p: torch.Tensor, *index) -> nn.Parameter:
    """A Parameter that is a view (shared storage) of a slice of p."""
    v = p.detach()[index] if index else p.detach()
    return nn.Parameter(v, requires_grad=p.requires_grad)


def _conv(cin, cout, k, stride=1, groups=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=bias)


def _slice_conv(src: nn.Conv2d, cout: int, cin: int, k: int | None = None) -> nn.Conv2d:
    """A static Conv2d on the prefix [cout, cin] (and the centre k x k crop) of src's weight."""
    K = src.kernel_size[0]
    k = K if k is None else k
    s = (K - k) // 2
    dw = src.groups > 1
    groups = cout if dw else 1
    c = nn.Conv2d(cin, cout, k, src.stride, k // 2, groups=groups, bias=src.bias is not None)
    c.weight = _share(src.weight, slice(0, cout), slice(0, 1 if dw else cin), slice(s, s + k), slice(s, s + k))
    if src.bias is not None:
        c.bias = _share(src.bias, slice(0, cout))
    return c


def _slice_bn(src: nn.BatchNorm2d, c: int) -> nn.BatchNorm2d:
    b = nn.BatchNorm2d(c, eps=src.eps, momentum=src.momentum)
    b.weight = _share(src.weight, slice(0, c))
    b.bias = _share(src.bias, slice(0, c))
    b.running_mean = src.running_mean[:c]
    b.running_var = src.running_var[:c]
    b.num_batches_tracked = src.num_batches_tracked
    return b


def _slice_linear(src: nn.Linear, cin: int) -> nn.Linear:
    lin = nn.Linear(cin, src.out_features, bias=src.bias is not None)
    lin.weight = _share(src.weight, slice(None), slice(0, cin))
    if src.bias is not None:
        lin.bias = _share(src.bias)
    return lin


@torch.no_grad()
def _init_random(module: nn.Module, seed: int, residual_gamma=(0.1, 0.4)):
    """Seeded random weights: Kaiming-normal convs (fan-in), BN with gamma in (0.5, 1.5) (or
    residual_gamma for BNs flagged ``_last_bn``), beta, running mean ~ N(0, 0.1), running var in
    (0.5, 1.5); linear layers N(0, 1/fan_in)."""
    g = torch.Generator().manual_seed(seed)

    def u(shape, lo, hi):
        return torch.rand(shape, generator=g) * (hi - lo) + lo

    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            lo, hi = residual_gamma if getattr(m, "_last_bn", False) else (0.5, 1.5)
            m.weight.copy_(u(c, lo, hi))
            m.bias.copy_(0.1 * torch.randn(c, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(u(c, 0.5, 1.5))
        elif isinstance(m, nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (1.0 / m.in_features) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


def export_module(net: nn.Module, path, resolution: int, dynamo: bool = False, opset: int | None = None,
                  input_name: str = "input", output_name: str = "logits"):
    """torch.onnx.export of a (static) SubNet with a 1 x 3 x res x res input; returns the path."""
    net = net.eval()
    x = torch.zeros(1, 3, resolution, resolution)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset or 18,
                                     input_names=[input_name], output_names=[output_name],
                                     verbose=False, optimize=True)
            prog.save(str(path))
        else:
            torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=opset or 13,
                              input_names=[input_name], output_names=[output_name],
                              do_constant_folding=True)
    return path


class _SuperNet(nn.Module, abc.ABC):
    """Common SuperNet API (the protocol of models/interface.py); subclasses define the elastic space."""
    resolution = 224

    def _finish_init(self, seed, state_dict, bn_stats: str, resolution: int) -> None:
        """Weights (seeded random or a state_dict), eval mode, the largest SubNet active, and BN
        running statistics re-estimated on seeded random images unless weights were supplied."""
        if seed is not None:
            _init_random(self, seed)
        if state_dict is not None:
            self.load_state_dict(state_dict)
        self.eval()
        self.set_active(self.largest_choice())
        if state_dict is None and seed is not None and bn_stats == "data":
            calibrate_bn(self.active_subnet(), random_images(4 if resolution <= 128 else 2, resolution, seed + 1))

    @abc.abstractmethod
    def elastic_space(self) -> dict:
        """{dimension: allowed values}"""

    @abc.abstractmethod
    def set_active(self, choice: dict | None = None, **kw):
        """Make the SubNet of ``choice`` (or keyword overrides) the active one."""

    @abc.abstractmethod
    def active_choice(self) -> dict:
        """The choice of the active SubNet."""

    @abc.abstractmethod
    def active_subnet(self) -> nn.Module:
        """The active SubNet as a plain module (shares the SuperNet's weights)."""

    @abc.abstractmethod
    def largest_choice(self) -> dict:
        """The choice with every dimension at its maximum."""

    @abc.abstractmethod
    def smallest_choice(self) -> dict:
        """The choice with every dimension at its minimum."""

    @abc.abstractmethod
    def sample_choice(self, seed=None) -> dict:
        """A random choice (seeded)."""

    def forward(self, x):
        return self.active_subnet()(x)

    def export_subnet(self, choice: dict | None, path, dynamo: bool = False, opset: int | None = None,
                      resolution: int | None = None):
        """Select ``choice`` (None: the current one) and export that SubNet as ONNX to ``path``."""
        if choice is not None:
            self.set_active(choice)
        return export_module(self.active_subnet(), path, resolution or self.resolution, dynamo, opset)

    def _restore(self, choice):
        self.set_active(choice)


# ================================================================ OFA-ResNet50

class Bottleneck(nn.Module):
    """1x1 conv-bn-relu, 3x3 (stride) conv-bn-relu, 1x1 conv-bn; shortcut identity or
    avgpool(stride, ceil_mode) + 1x1 conv-bn; relu(sum)."""

    def __init__(self, cin, mid, cout, stride, downsample: bool):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, mid, 1), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = _conv(mid, mid, 3, stride), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(mid, cout, 1), nn.BatchNorm2d(cout)
        self.bn3._last_bn = True
        self.stride = stride
        if downsample:
            self.downsample = nn.Sequential()
            self.downsample.add_module("avg_pool", nn.AvgPool2d(stride, stride, 0, ceil_mode=True))
            self.downsample.add_module("conv", _conv(cin, cout, 1))
            self.downsample.add_module("bn", nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        sc = x if self.downsample is None else self.downsample(x)
        return F.relu(y + sc)


class ConvBNAct(nn.Module):
    def __init__(self, cin, cout, k, stride=1, act="relu", impl="ofa", groups=1, bn=True, bias=False):
        super().__init__()
        self.conv = _conv(cin, cout, k, stride, groups, bias)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.act = _act(act, impl)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)

    def sliced(self, cout, cin, k=None):
        m = copy.copy(self)
        m._modules = dict(self._modules)
        m.conv = _slice_conv(self.conv, cout, cin, k)
        if self.bn is not None:
            m.bn = _slice_bn(self.bn, cout)
        return m


class _StemResidual(nn.Module):
    def __init__(self, conv: ConvBNAct):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x) + x


class ResNetSubNet(nn.Module):
    """A static OFA-ResNet50 SubNet (its parameters are views of the SuperNet's)."""

    def __init__(self, stem: list, blocks: list, classifier: nn.Linear):
        super().__init__()
        self.input_stem = nn.Sequential(*stem)
        self.max_pooling = nn.MaxPool2d(3, 2, 1)
        self.blocks = nn.Sequential(*blocks)
        self.classifier = classifier

    def forward(self, x):
        x = self.input_stem(x)
        x = self.max_pooling(x)
        x = self.blocks(x)
        x = x.mean(3, keepdim=True).mean(2, keepdim=True)     # as in OFA (two ReduceMean)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


class OFAResNet50(_SuperNet):
    """The OFA-ResNet50 SuperNet (``ofa_resnet50``: d in {0,1,2}, e in {0.2,0.25,0.35}, w in
    {0.65,0.8,1.0}).

    choice = ``{"d": [d0, d1..d4], "e": [18 expand ratios], "w": [6 width indices]}`` as in OFA's
    ``set_active_subnet``: ``d0 = 2`` keeps the stem's residual conv (otherwise skipped), ``d1..d4``
    the extra blocks of each stage over the base depth (2, 2, 4, 2); ``e`` one expand ratio per block
    (blocks a stage skips ignore theirs); ``w`` indices into ``WIDTH_MULT``: w0 the first two stem
    convs, w1 the third, w2..w5 the four stages.  Scalars broadcast.
    """
    BASE_DEPTH = (2, 2, 4, 2)
    STAGE_WIDTH = (256, 512, 1024, 2048)
    STRIDES = (1, 2, 2, 2)
    DEPTH = (0, 1, 2)
    EXPAND = (0.2, 0.25, 0.35)
    WIDTH_MULT = (0.65, 0.8, 1.0)

    def __init__(self, num_classes: int = 1000, seed: int | None = 0, state_dict=None, resolution: int = 224,
                 bn_stats: str = "data"):
        super().__init__()
        self.resolution = resolution
        self.num_classes = num_classes
        W = self.WIDTH_MULT
        self.stem_widths = [make_divisible(64 * w, 8) for w in W]
        self.mid_stem_widths = [make_divisible(c // 2, 8) for c in self.stem_widths]
        self.stage_widths = [[make_divisible(s * w, 8) for w in W] for s in self.STAGE_WIDTH]
        smax, mmax = max(self.stem_widths), max(self.mid_stem_widths)
        self.stem0 = ConvBNAct(3, mmax, 3, 2)
        self.stem1 = ConvBNAct(mmax, mmax, 3, 1)
        self.stem2 = ConvBNAct(mmax, smax, 3, 1)
        blocks, self.stage_blocks = [], []
        cin = smax
        for si, (base, widths, stride) in enumerate(zip(self.BASE_DEPTH, self.stage_widths, self.STRIDES)):
            idx = []
            cout = max(widths)
            for bi in range(base + max(self.DEPTH)):
                s = stride if bi == 0 else 1
                mid = make_divisible(round(cout * max(self.EXPAND)), 8)
                idx.append(len(blocks))
                blocks.append(Bottleneck(cin, mid, cout, s, downsample=(bi == 0)))
                cin = cout
            self.stage_blocks.append(idx)
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(cin, num_classes)
        self._finish_init(seed, state_dict, bn_stats, resolution)

    # ---- the space
    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def elastic_space(self) -> dict:
        return {"d": list(self.DEPTH), "e": list(self.EXPAND), "w": list(range(len(self.WIDTH_MULT))),
                "width_mult": list(self.WIDTH_MULT), "base_depth": list(self.BASE_DEPTH),
                "n_d": 1 + len(self.BASE_DEPTH), "n_e": self.n_blocks, "n_w": 2 + len(self.BASE_DEPTH)}

    def largest_choice(self) -> dict:
        return {"d": [max(self.DEPTH)] * 5, "e": [max(self.EXPAND)] * self.n_blocks, "w": [len(self.WIDTH_MULT) - 1] * 6}

    def smallest_choice(self) -> dict:
        return {"d": [min(self.DEPTH)] * 5, "e": [min(self.EXPAND)] * self.n_blocks, "w": [0] * 6}

    def sample_choice(self, seed=None) -> dict:
        r = _random.Random(seed)
        return {"d": [r.choice(self.DEPTH) for _ in range(5)], "e": [r.choice(self.EXPAND) for _ in range(self.n_blocks)],
                "w": [r.randrange(len(self.WIDTH_MULT)) for _ in range(6)]}

    def set_active(self, choice: dict | None = None, **kw):
        c = dict(self.active_choice()) if hasattr(self, "_choice") else self.largest_choice()
        c.update(choice or {})
        c.update(kw)
        d, e, w = _val2list(c["d"], 5), _val2list(c["e"], self.n_blocks), _val2list(c["w"], 6)
        for v in d:
            if v not in self.DEPTH:
                raise ValueError(f"depth {v} not in {self.DEPTH}")
        for v in e:
            if v not in self.EXPAND:
                raise ValueError(f"expand ratio {v} not in {self.EXPAND}")
        for v in w:
            if v not in range(len(self.WIDTH_MULT)):
                raise ValueError(f"width index {v} not in 0..{len(self.WIDTH_MULT) - 1}")
        self._choice = {"d": d, "e": e, "w": w}
        object.__setattr__(self, "_net", None)     # a cache, not a registered submodule

    def active_choice(self) -> dict:
        return copy.deepcopy(self._choice)

    def active_subnet(self) -> ResNetSubNet:
        if self._net is not None:
            return self._net
        d, e, w = self._choice["d"], self._choice["e"], self._choice["w"]
        mid, stem = self.mid_stem_widths[w[0]], self.stem_widths[w[1]]
        layers = [self.stem0.sliced(mid, 3)]
        if d[0] == max(self.DEPTH):
            layers.append(_StemResidual(self.stem1.sliced(mid, mid)))
        layers.append(self.stem2.sliced(stem, mid))
        blocks, cin = [], stem
        for si, idx in enumerate(self.stage_blocks):
            cout = self.stage_widths[si][w[2 + si]]
            keep = len(idx) - (max(self.DEPTH) - d[1 + si])
            for bi in idx[:keep]:
                src = self.blocks[bi]
                m = make_divisible(round(cout * e[bi]), 8)
                b = Bottleneck.__new__(Bottleneck)
                nn.Module.__init__(b)
                b.stride = src.stride
                b.conv1, b.bn1 = _slice_conv(src.conv1, m, cin), _slice_bn(src.bn1, m)
                b.conv2, b.bn2 = _slice_conv(src.conv2, m, m), _slice_bn(src.bn2, m)
                b.conv3, b.bn3 = _slice_conv(src.conv3, cout, m), _slice_bn(src.bn3, cout)
                if src.downsample is not None:
                    ds = nn.Sequential()
                    ds.add_module("avg_pool", src.downsample.avg_pool)
                    ds.add_module("conv", _slice_conv(src.downsample.conv, cout, cin))
                    ds.add_module("bn", _slice_bn(src.downsample.bn, cout))
                    b.downsample = ds
                else:
                    b.downsample = None
                blocks.append(b)
                cin = cout
        object.__setattr__(self, "_net", ResNetSubNet(layers, blocks, _slice_linear(self.classifier, cin)).eval())
        return self._net


# ================================================================ OFA-MobileNetV3

class SqueezeExcite(nn.Module):
    """OFA's SE: mean over W then H, 1x1 reduce conv (bias) + ReLU, 1x1 expand conv (bias) +
    h-sigmoid, channel-wise multiply."""

    def __init__(self, c, mid, impl="ofa"):
        super().__init__()
        self.reduce = nn.Conv2d(c, mid, 1, bias=True)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(mid, c, 1, bias=True)
        self.h_sigmoid = _act("h_sigmoid", impl)

    def forward(self, x):
        y = x.mean(3, keepdim=True).mean(2, keepdim=True)
        y = self.h_sigmoid(self.expand(self.relu(self.reduce(y))))
        return x * y


class MBConv(nn.Module):
    """[1x1 expand-bn-act] -> kxk depthwise-bn-act -> [SE] -> 1x1 project-bn; identity shortcut when
    stride 1 and in == out."""

    def __init__(self, cin, mid, cout, k, stride, act, se, impl="ofa", expand=True):
        super().__init__()
        self.inverted_bottleneck = ConvBNAct(cin, mid, 1, 1, act, impl) if expand else None
        self.depth_conv = ConvBNAct(mid, mid, k, stride, act, impl, groups=mid)
        self.se = SqueezeExcite(mid, make_divisible(mid // 4, 8), impl) if se else None
        self.point_linear = ConvBNAct(mid, cout, 1, 1, None, impl)
        self.point_linear.bn._last_bn = True
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x if self.inverted_bottleneck is None else self.inverted_bottleneck(x)
        y = self.depth_conv(y)
        if self.se is not None:
            y = self.se(y)
        y = self.point_linear(y)
        return y + x if self.residual else y


class MBV3SubNet(nn.Module):
    """A static OFA-MobileNetV3 SubNet (its parameters are views of the SuperNet's)."""

    def __init__(self, first_conv, blocks, final_expand, feature_mix, classifier):
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.Sequential(*blocks)
        self.final_expand_layer = final_expand
        self.feature_mix_layer = feature_mix
        self.classifier = classifier

    def forward(self, x):
        x = self.first_conv(x)
        x = self.blocks(x)
        x = self.final_expand_layer(x)
        x = x.mean(3, keepdim=True).mean(2, keepdim=True)
        x = self.feature_mix_layer(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


class OFAMobileNetV3(_SuperNet):
    """The OFA-MobileNetV3 SuperNet (``ofa_mbv3_d234_e346_k357_w1.0``).

    choice = ``{"ks": [20 kernel sizes], "e": [20 expand ratios], "d": [5 depths]}`` as in OFA's
    ``set_active_subnet``: one kernel size in {3, 5, 7} and one expand ratio in {3, 4, 6} per block
    of the 5 stages (4 blocks each; blocks a stage skips ignore theirs), one depth in {2, 3, 4} per
    stage.  Scalars broadcast.
    """
    BASE_WIDTH = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
    STRIDES = (2, 2, 2, 1, 2)
    ACTS = ("relu", "relu", "h_swish", "h_swish", "h_swish")
    SE = (False, True, False, True, True)
    KERNEL = (3, 5, 7)
    EXPAND = (3, 4, 6)
    DEPTH = (2, 3, 4)

    def __init__(self, num_classes: int = 1000, seed: int | None = 0, state_dict=None, resolution: int = 224,
                 act_impl: str = "ofa", bn_stats: str = "data"):
        super().__init__()
        if act_impl not in ("ofa", "native"):
            raise ValueError("act_impl must be 'ofa' or 'native'")
        self.resolution = resolution
        self.act_impl = act_impl
        bw = self.BASE_WIDTH
        self.first_conv = ConvBNAct(3, bw[0], 3, 2, "h_swish", act_impl)
        self.first_block = MBConv(bw[0], bw[1], bw[1], 3, 1, "relu", False, act_impl, expand=False)
        blocks, self.stage_blocks = [], []
        cin = bw[1]
        kmax, emax = max(self.KERNEL), max(self.EXPAND)
        for si, (cout, s, act, se) in enumerate(zip(bw[2:7], self.STRIDES, self.ACTS, self.SE)):
            idx = []
            for bi in range(max(self.DEPTH)):
                idx.append(len(blocks))
                blocks.append(MBConv(cin, make_divisible(round(cin * emax), 8), cout, kmax,
                                     s if bi == 0 else 1, act, se, act_impl))
                cin = cout
            self.stage_blocks.append(idx)
        self.blocks = nn.ModuleList(blocks)
        self.final_expand_layer = ConvBNAct(cin, bw[7], 1, 1, "h_swish", act_impl)
        self.feature_mix_layer = ConvBNAct(bw[7], bw[8], 1, 1, "h_swish", act_impl, bn=False)
        self.classifier = nn.Linear(bw[8], num_classes)
        self._finish_init(seed, state_dict, bn_stats, resolution)

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def elastic_space(self) -> dict:
        return {"ks": list(self.KERNEL), "e": list(self.EXPAND), "d": list(self.DEPTH),
                "n_ks": self.n_blocks, "n_e": self.n_blocks, "n_d": len(self.stage_blocks)}

    def largest_choice(self) -> dict:
        return {"ks": [max(self.KERNEL)] * self.n_blocks, "e": [max(self.EXPAND)] * self.n_blocks,
                "d": [max(self.DEPTH)] * len(self.stage_blocks)}

    def smallest_choice(self) -> dict:
        return {"ks": [min(self.KERNEL)] * self.n_blocks, "e": [min(self.EXPAND)] * self.n_blocks,
                "d": [min(self.DEPTH)] * len(self.stage_blocks)}

    def sample_choice(self, seed=None) -> dict:
        r = _random.Random(seed)
        return {"ks": [r.choice(self.KERNEL) for _ in range(self.n_blocks)],
                "e": [r.choice(self.EXPAND) for _ in range(self.n_blocks)],
                "d": [r.choice(self.DEPTH) for _ in range(len(self.stage_blocks))]}

    def set_active(self, choice: dict | None = None, **kw):
        c = dict(self.active_choice()) if hasattr(self, "_choice") else self.largest_choice()
        c.update(choice or {})
        c.update(kw)
        ks, e, d = _val2list(c["ks"], self.n_blocks), _val2list(c["e"], self.n_blocks), _val2list(c["d"], 5)
        for v, allowed, what in ((ks, self.KERNEL, "kernel size"), (e, self.EXPAND, "expand ratio"),
                                 (d, self.DEPTH, "depth")):
            for x in v:
                if x not in allowed:
                    raise ValueError(f"{what} {x} not in {allowed}")
        self._choice = {"ks": ks, "e": e, "d": d}
        object.__setattr__(self, "_net", None)     # a cache, not a registered submodule

    def active_choice(self) -> dict:
        return copy.deepcopy(self._choice)

    def _slice_mb(self, src: MBConv, cin: int, k: int, e) -> MBConv:
        b = copy.copy(src)
        b._modules = dict(src._modules)
        if src.inverted_bottleneck is None:
            mid = cin
        else:
            mid = make_divisible(round(cin * e), 8)
            b.inverted_bottleneck = src.inverted_bottleneck.sliced(mid, cin)
        b.depth_conv = src.depth_conv.sliced(mid, mid, k)
        if src.se is not None:
            se = copy.copy(src.se)
            se._modules = dict(src.se._modules)
            sm = make_divisible(mid // 4, 8)
            se.reduce = _slice_conv(src.se.reduce, sm, mid)
            se.expand = _slice_conv(src.se.expand, mid, sm)
            b.se = se
        cout = src.point_linear.conv.out_channels
        b.point_linear = src.point_linear.sliced(cout, mid)
        b.residual = src.residual and cin == cout
        return b

    def active_subnet(self) -> MBV3SubNet:
        if self._net is not None:
            return self._net
        ks, e, d = self._choice["ks"], self._choice["e"], self._choice["d"]
        blocks = [self._slice_mb(self.first_block, self.BASE_WIDTH[1], 3, 1)]
        cin = self.BASE_WIDTH[1]
        for si, idx in enumerate(self.stage_blocks):
            for bi in idx[:d[si]]:
                blocks.append(self._slice_mb(self.blocks[bi], cin, ks[bi], e[bi]))
                cin = self.blocks[bi].point_linear.conv.out_channels
        object.__setattr__(self, "_net", MBV3SubNet(self.first_conv, blocks, self.final_expand_layer,
                                                    self.feature_mix_layer, self.classifier).eval())
        return self._net


FAMILIES = {"ofa_resnet50": OFAResNet50, "ofa_mbv3": OFAMobileNetV3}


def build_subnet(family: str, which="largest", resolution: int = 224, seed: int = 0, **kw):
    """(SuperNet, static SubNet) of one family; ``which`` = "largest", "smallest", an int seed for
    a random choice, or a choice dict."""
    sn = FAMILIES[family](seed=seed, resolution=resolution, **kw)
    if which == "largest":
        ch = sn.largest_choice()
    elif which == "smallest":
        ch = sn.smallest_choice()
    elif isinstance(which, int):
        ch = sn.sample_choice(which)
    else:
        ch = which
    sn.set_active(ch)
    return sn, sn.active_subnet()


def random_images(n: int, resolution: int = 224, seed: int = 0):
    """n seeded random "images" 3 x res x res (float32 numpy, about zero mean, unit variance): bilinear
    upsampled noise at res/16, res/8 and res/4 (so the local statistics do not depend on the
    resolution) plus weak pixel noise.  Unlike i.i.d. pixels, whose global
    average pool is almost the same for every input, they give random-weight SubNets input-dependent
    logits, so top-1 agreement between two executions means something."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, resolution, resolution)
    for div, w in ((16, 1.0), (8, 0.7), (4, 0.5)):
        size = max(2, resolution // div)
        z = torch.randn(n, 3, size, size, generator=g)
        x += w * F.interpolate(z, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x += 0.2 * torch.randn(n, 3, resolution, resolution, generator=g)
    x = (x - x.mean()) / x.std()
    return x.numpy().astype("float32")


@torch.no_grad()
def calibrate_bn(net: nn.Module, images, batch: int = 8, var_floor: float = 0.5):
    """Re-estimate every BatchNorm's running mean / variance on ``images`` (N x 3 x H x W), as OFA does
    for its SubNets: cumulative averages over the batches, in train mode, then back to eval."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    x = torch.as_tensor(images)
    for i in range(0, len(x), batch):
        net(x[i:i + batch])
    for m, (mom, tr) in zip(bns, saved):
        m.momentum = mom
        m.train(tr)
        # floor the variances (at var_floor x the layer's mean variance): a channel that is almost
        # constant on the calibration images would otherwise be scaled up to unit variance, noise and all
        m.running_var.clamp_(min=float(var_floor * m.running_var.mean()))
    return net

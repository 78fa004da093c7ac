"""Small ONNX test networks built with onnx.helper and seeded random weights (no torch needed)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["tiny_cnn", "resnet_tiny", "mobilenet_tiny", "mbv3_tiny", "resnet50", "random_layer_model",
           "Builder", "ZOO"]

OPSET = 13


class Builder:
    """A tiny graph builder: every method adds one ONNX node and returns its output name."""

    def __init__(self, name: str, shape, seed: int = 0, input_name: str = "input"):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(shape))
        self.x = input_name
        self.n = 0

    def _id(self, kind):
        self.n += 1
        return f"{kind}{self.n}"

    def const(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op, inputs, name=None, **attrs):
        name = name or self._id(op.lower())
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def conv(self, x, cin, cout, k, stride=1, pad=None, group=1, bias=True, name=None, gain=2.0):
        name = name or self._id("conv")
        pad = k // 2 if pad is None else pad
        fan_in = (cin // group) * k * k
        w = (self.rng.standard_normal((cout, cin // group, k, k), dtype=np.float32)
             * np.float32(np.sqrt(gain / fan_in)))
        ins = [x, self.const(f"{name}.w", w)]
        if bias:
            ins.append(self.const(f"{name}.b", (0.1 * self.rng.standard_normal(cout)).astype(np.float32)))
        return self.node("Conv", ins, name, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[pad] * 4, group=group)

    def bn(self, x, c, name=None, gamma=(0.5, 1.5)):
        name = name or self._id("bn")
        r = self.rng
        p = [self.const(f"{name}.gamma", r.uniform(*gamma, c).astype(np.float32)),
             self.const(f"{name}.beta", (0.1 * r.standard_normal(c)).astype(np.float32)),
             self.const(f"{name}.mean", (0.1 * r.standard_normal(c)).astype(np.float32)),
             self.const(f"{name}.var", r.uniform(0.5, 1.5, c).astype(np.float32))]
        return self.node("BatchNormalization", [x, *p], name, epsilon=1e-5)

    def relu(self, x):
        return self.node("Relu", [x])

    def relu6(self, x):
        lo = self.const(self._id("c") + ".min", np.array(0.0, np.float32))
        hi = self.const(self._id("c") + ".max", np.array(6.0, np.float32))
        return self.node("Clip", [x, lo, hi])

    def gemm(self, x, k, n, name=None):
        name = name or self._id("fc")
        w = (self.rng.standard_normal((n, k), dtype=np.float32) * np.float32(np.sqrt(1.0 / k)))
        b = (0.1 * self.rng.standard_normal(n)).astype(np.float32)
        return self.node("Gemm", [x, self.const(f"{name}.w", w), self.const(f"{name}.b", b)], name, transB=1)

    def model(self, out, out_shape) -> onnx.ModelProto:
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, list(out_shape))
        g = helper.make_graph(self.nodes, self.name, [self.input], [y], initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sushi.zoo")
        m.ir_version = 8
        return m


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """1x1x8x8 (digits-sized): conv-bn-relu, maxpool, conv-relu6, GAP, gemm -> 10."""
    b = Builder("tiny_cnn", (1, 1, 8, 8), seed)
    x = b.relu(b.bn(b.conv(b.x, 1, 8, 3, name="conv1"), 8, name="bn1"))
    x = b.node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    x = b.relu6(b.conv(x, 8, 16, 3, name="conv2"))
    x = b.node("GlobalAveragePool", [x], "gap")
    x = b.node("Flatten", [x], "flatten", axis=1)
    return b.model(b.gemm(x, 16, 10, name="fc"), (1, 10))


def _basic_block(b: Builder, x, cin, cout, stride, name):
    y = b.relu(b.bn(b.conv(x, cin, cout, 3, stride, bias=False, name=f"{name}.conv1"), cout, name=f"{name}.bn1"))
    y = b.bn(b.conv(y, cout, cout, 3, 1, bias=False, name=f"{name}.conv2"), cout, name=f"{name}.bn2",
             gamma=(0.3, 0.8))
    if stride != 1 or cin != cout:
        x = b.bn(b.conv(x, cin, cout, 1, stride, pad=0, bias=False, name=f"{name}.proj"), cout,
                 name=f"{name}.proj_bn")
    return b.relu(b.node("Add", [y, x], f"{name}.add"))


def resnet_tiny(seed: int = 0) -> onnx.ModelProto:
    """1x3x16x16: stem, an identity residual block, a strided block with a projection shortcut."""
    b = Builder("resnet_tiny", (1, 3, 16, 16), seed)
    x = b.relu(b.bn(b.conv(b.x, 3, 12, 3, bias=False, name="stem"), 12, name="stem_bn"))
    x = _basic_block(b, x, 12, 12, 1, "layer1")
    x = _basic_block(b, x, 12, 20, 2, "layer2")
    x = b.node("GlobalAveragePool", [x], "gap")
    x = b.node("Flatten", [x], "flatten")
    return b.model(b.gemm(x, 20, 10, name="fc"), (1, 10))


def mobilenet_tiny(seed: int = 0) -> onnx.ModelProto:
    """1x3x16x16: depthwise-separable blocks with ReLU6, an average pool, flatten + gemm."""
    b = Builder("mobilenet_tiny", (1, 3, 16, 16), seed)
    x = b.relu6(b.bn(b.conv(b.x, 3, 8, 3, 2, bias=False, name="stem"), 8, name="stem_bn"))
    for i, (cin, cout, s) in enumerate([(8, 16, 1), (16, 24, 2)]):
        x = b.relu6(b.bn(b.conv(x, cin, cin, 3, s, group=cin, bias=False, name=f"dw{i}"), cin, name=f"dw{i}_bn"))
        x = b.relu6(b.bn(b.conv(x, cin, cout, 1, 1, pad=0, bias=False, name=f"pw{i}"), cout, name=f"pw{i}_bn"))
    x = b.node("AveragePool", [x], "avgpool", kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Flatten", [x], "flatten")
    return b.model(b.gemm(x, 24 * 2 * 2, 10, name="fc"), (1, 10))


def resnet50(seed: int = 0, num_classes: int = 1000, size: int = 224) -> onnx.ModelProto:
    """Full-size bottleneck ResNet-50 (~25.6 M parameters) with random weights and BN statistics."""
    b = Builder("resnet50", (1, 3, size, size), seed)
    x = b.relu(b.bn(b.conv(b.x, 3, 64, 7, 2, 3, bias=False, name="conv1"), 64, name="bn1"))
    x = b.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for si, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]):
        for bi in range(blocks):
            s = stride if bi == 0 else 1
            n = f"layer{si + 1}.{bi}"
            cout = width * 4
            y = b.relu(b.bn(b.conv(x, cin, width, 1, 1, 0, bias=False, name=f"{n}.conv1"), width, name=f"{n}.bn1"))
            y = b.relu(b.bn(b.conv(y, width, width, 3, s, 1, bias=False, name=f"{n}.conv2"), width, name=f"{n}.bn2"))
            y = b.bn(b.conv(y, width, cout, 1, 1, 0, bias=False, name=f"{n}.conv3"), cout, name=f"{n}.bn3",
                     gamma=(0.1, 0.4))
            sc = x
            if bi == 0:
                sc = b.bn(b.conv(x, cin, cout, 1, s, 0, bias=False, name=f"{n}.downsample"), cout,
                          name=f"{n}.downsample_bn")
            x = b.relu(b.node("Add", [y, sc], f"{n}.add"))
            cin = cout
    x = b.node("GlobalAveragePool", [x], "avgpool")
    x = b.node("Flatten", [x], "flatten")
    return b.model(b.gemm(x, 2048, num_classes, name="fc"), (1, num_classes))


def _hswish(b: Builder, x):
    """x * relu6(x + 3) / 6 as torch's exporters write OFA's h-swish."""
    three = b.const(b._id("c") + ".three", np.array(3.0, np.float32))
    six = b.const(b._id("c") + ".six", np.array(6.0, np.float32))
    zero = b.const(b._id("c") + ".zero", np.array(0.0, np.float32))
    r = b.node("Clip", [b.node("Add", [x, three]), zero, six])
    return b.node("Div", [b.node("Mul", [x, r]), six])


def mbv3_tiny(seed: int = 0) -> onnx.ModelProto:
    """1x3x16x16 MobileNetV3-style: conv + h-swish (decomposed), an MBConv with expand + h-swish,
    depthwise 5x5, squeeze-excite (mean over W then H, ReLU, HardSigmoid gate, channel Mul), a
    residual, sigmoid-gated head (x * Sigmoid(x)), global pool, flatten, gemm."""
    b = Builder("mbv3_tiny", (1, 3, 16, 16), seed)
    x = _hswish(b, b.bn(b.conv(b.x, 3, 8, 3, 2, bias=False, name="stem"), 8, name="stem_bn"))
    y = _hswish(b, b.bn(b.conv(x, 8, 24, 1, 1, 0, bias=False, name="expand"), 24, name="expand_bn"))
    y = _hswish(b, b.bn(b.conv(y, 24, 24, 5, 1, group=24, bias=False, name="dw"), 24, name="dw_bn"))
    ax3 = b.node("ReduceMean", [y], "se_mean_w", axes=[3], keepdims=1)
    m = b.node("ReduceMean", [ax3], "se_mean_h", axes=[2], keepdims=1)
    r = b.relu(b.conv(m, 24, 8, 1, 1, 0, name="se_reduce"))
    gate = b.node("HardSigmoid", [b.conv(r, 8, 24, 1, 1, 0, name="se_expand")], "se_gate",
                  alpha=1.0 / 6, beta=0.5)
    y = b.node("Mul", [y, gate], "se_mul")
    y = b.bn(b.conv(y, 24, 8, 1, 1, 0, bias=False, name="project"), 8, name="project_bn", gamma=(0.3, 0.8))
    x = b.node("Add", [y, x], "residual")
    h = b.conv(x, 8, 32, 1, 1, 0, name="head")
    h = b.node("Mul", [h, b.node("Sigmoid", [h], "head_sigmoid")], "head_silu")
    g = b.node("GlobalAveragePool", [h], "gap")
    f = b.node("Flatten", [g], "flatten")
    return b.model(b.gemm(f, 32, 10, name="fc"), (1, 10))


ZOO = {"tiny_cnn": tiny_cnn, "resnet_tiny": resnet_tiny, "mobilenet_tiny": mobilenet_tiny, "mbv3_tiny": mbv3_tiny}

LAYER_KINDS = ("conv", "dwconv", "maxpool", "avgpool", "gap", "add", "gemm")


def random_layer_model(rng, kind: str | None = None):
    """ONE random layer configuration -> (ModelProto, description dict).

    Sized to fit the 'tiny' (R=V=4, 2048 words, 128 tiles) and '8x8' presets.  ``rng`` is a
    numpy Generator or an int seed; ``kind`` forces one of LAYER_KINDS.
    """
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    kind = kind or str(rng.choice(LAYER_KINDS))
    seed = int(rng.integers(1 << 30))
    c = int(rng.integers(1, 14))
    h = int(rng.integers(4, 13))
    w = int(rng.integers(4, 13))
    act = str(rng.choice(["none", "relu", "relu6"]))
    desc = dict(kind=kind, cin=c, h=h, w=w)
    if kind == "gemm":
        c, h, w = int(rng.integers(1, 9)), int(rng.integers(1, 7)), int(rng.integers(1, 7))
        desc.update(cin=c, h=h, w=w)
    b = Builder(f"layer_{kind}", (1, c, h, w), seed)

    def activate(x):
        desc["act"] = act
        return {"none": lambda v: v, "relu": b.relu, "relu6": b.relu6}[act](x)

    x = b.x
    if kind == "conv":
        k = int(rng.choice([1, 3, 5]))
        while k > min(h, w) + 2 * (k // 2):
            k -= 2
        s = int(rng.choice([1, 2]))
        p = int(rng.integers(0, k // 2 + 1))
        if h + 2 * p < k or w + 2 * p < k:
            p = k // 2
        cout = int(rng.integers(1, 14))
        desc.update(k=k, stride=s, pad=p, cout=cout)
        y = activate(b.conv(x, c, cout, k, s, p, name="conv"))
    elif kind == "dwconv":
        k = int(rng.choice([3, 5]))
        s = int(rng.choice([1, 2]))
        p = int(rng.integers(0, k // 2 + 1))
        if h + 2 * p < k or w + 2 * p < k:
            p = k // 2
        desc.update(k=k, stride=s, pad=p, cout=c)
        y = activate(b.conv(x, c, c, k, s, p, group=c, name="dwconv"))
    elif kind in ("maxpool", "avgpool"):
        k = int(rng.choice([2, 3]))
        s = int(rng.choice([1, 2]))
        p = int(rng.integers(0, k // 2 + 1))
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        if kind == "avgpool":
            attrs["count_include_pad"] = 1 if p else int(rng.integers(0, 2))
        desc.update(k=k, stride=s, pad=p)
        y = b.node("MaxPool" if kind == "maxpool" else "AveragePool", [x], kind, **attrs)
        if kind == "maxpool":
            y = activate(y)
    elif kind == "gap":
        y = b.node("GlobalAveragePool", [x], "gap")
    elif kind == "add":
        cout = c
        a = activate(b.conv(x, c, cout, 3, 1, 1, name="branch_a"))
        second = str(rng.choice(["identity", "conv"]))
        bb = x if second == "identity" else b.conv(x, c, cout, 1, 1, 0, name="branch_b")
        y = b.node("Add", [a, bb], "add")
        post = bool(rng.integers(0, 2))
        if post:
            y = b.relu(y)
        desc.update(second=second, post_relu=post, cout=cout)
    elif kind == "gemm":
        n = int(rng.integers(1, 21))
        f = b.node("Flatten", [x], "flatten")
        y = b.gemm(f, c * h * w, n, name="gemm")
        desc.update(cout=n)
        return b.model(y, (1, n)), desc
    else:
        raise ValueError(f"unknown layer kind {kind!r}; kinds: {LAYER_KINDS}")
    m = b.model(y, [1, 0, 0, 0])
    # let onnx fill the output shape (the compiler never trusts it anyway)
    m.graph.output[0].type.tensor_type.ClearField("shape")
    return m, desc

"""ImageNet-shaped networks with seeded random weights: ResNet-18, ResNet-50 (v1.5) and MobileNetV2 at 224x224x3.

No ImageNet data or pretrained weights are used: every weight and bias is a seeded random integer, so these
networks say nothing about accuracy. What they are for is what does not depend on the values: the layer
shapes of the real networks, hence programs, cycles, memory traffic and energy, and bit-exactness of the
accelerator against the golden model on them. They are generated deterministically on first use (a seed
gives the same network everywhere) instead of shipped as files.

Every convolution stands for the network's convolution with its batch norm folded (a Conv2D with bias, with
ReLU where the network has one; MobileNetV2's ReLU6 is a ReLU here, its clamp at 6 left to the 8-bit
saturation), residual additions are Add layers, the pools and the classifier are as in torchvision's
definitions. Every activation has :data:`FRAC` fractional bits and each layer's weight type carries the
shift that brings a typical accumulator into the 8-bit output, so activations neither vanish nor saturate
everywhere.
"""

from __future__ import annotations

import numpy as np

from ..golden.layers import Add, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D
from ..golden.network import QuantizedNetwork
from ..golden.qtypes import QType

__all__ = ["IMAGENET", "FRAC", "imagenet_network", "resnet18", "resnet50", "mobilenetv2"]

#: Fractional bits of every activation.
FRAC = 4
#: ResNet-18 stages: (output channels, basic blocks, stride of the first block).
RESNET18_STAGES = ((64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2))
#: ResNet-50 stages: (bottleneck width, output channels, blocks, stride of the first block).
RESNET50_STAGES = ((64, 256, 3, 1), (128, 512, 4, 2), (256, 1024, 6, 2), (512, 2048, 3, 2))
#: MobileNetV2 inverted residual settings: (expansion t, output channels c, blocks n, first stride s).
MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1))


class _Builder:
    """Layers of a network being written down, with each tensor's shape and type."""

    def __init__(self, seed: int, hw: int):
        self.rng = np.random.default_rng(seed)
        self.in_t = QType(8, True, FRAC)
        self.layers = []
        self.types = {"input": self.in_t}
        self.shapes = {"input": (hw, hw, 3)}

    def conv(self, name, src, cout, k, stride, relu, groups=1):
        h, w, cin = self.shapes[src]
        pad = k // 2
        fan_in = k * k * cin // groups
        # Shift so that a typical accumulator (sqrt(fan_in) * 64 * 32) lands in the output's upper half.
        shift = max(0, int(np.log2(np.sqrt(fan_in) * 64 * 32 / 64)))
        out_t = QType(8, not relu, FRAC)      # every activation at FRAC bits: the weight carries the shift
        layer = Conv2D(name=name, inputs=(src,), weight=self.rng.integers(-127, 128, (k, k, cin // groups, cout)),
                       w_type=QType(8, True, shift + FRAC - self.types[src].frac_bits),
                       out_type=out_t, bias=self.rng.integers(-1 << 12, 1 << 12, cout), relu=relu,
                       stride=stride, padding=pad, groups=groups)
        self.layers.append(layer)
        self.types[name] = out_t
        self.shapes[name] = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, cout)
        return name

    def add(self, name, a, b, relu=True):
        f = min(self.types[a].frac_bits, self.types[b].frac_bits)
        out_t = QType(8, not relu, f)
        self.layers.append(Add(name=name, inputs=(a, b), out_type=out_t, relu=relu))
        self.types[name], self.shapes[name] = out_t, self.shapes[a]
        return name

    def maxpool(self, name, src, pool, stride, padding):
        h, w, c = self.shapes[src]
        self.layers.append(MaxPool2D(name=name, inputs=(src,), pool=pool, stride=stride, padding=padding))
        self.types[name] = self.types[src]
        self.shapes[name] = ((h + 2 * padding - pool) // stride + 1, (w + 2 * padding - pool) // stride + 1, c)
        return name

    def head(self, src, classes):
        """Global average pool, flatten, the classifier."""
        h, w, c = self.shapes[src]
        self.layers.append(AvgPool2D(name="avgpool", inputs=(src,), pool=(h, w)))
        self.layers.append(Flatten(name="flat", inputs=("avgpool",)))
        self.layers.append(Dense(name="fc", inputs=("flat",), weight=self.rng.integers(-127, 128, (c, classes)),
                                 w_type=QType(8, True, 10), out_type=QType(8, True, FRAC),
                                 bias=self.rng.integers(-1 << 12, 1 << 12, classes), relu=False))

    def network(self, model, seed):
        return QuantizedNetwork(self.in_t, self.shapes["input"], self.layers, "half_even",
                                {"model": model, "random": seed, "accuracy": "not claimed: random weights"})


def resnet50(seed: int = 0, hw: int = 224, classes: int = 1000) -> QuantizedNetwork:
    """ResNet-50 (v1.5: the stride on the 3x3 convolution of a bottleneck) of *hw* x *hw* x 3 inputs."""
    b = _Builder(seed, hw)
    src = b.conv("conv1", "input", 64, 7, 2, True)
    src = b.maxpool("pool1", src, 3, 2, 1)
    for s, (width, cout, blocks, stride) in enumerate(RESNET50_STAGES, start=2):
        for i in range(blocks):
            st = stride if i == 0 else 1
            name = f"layer{s}.{i}"
            x = b.conv(f"{name}.conv1", src, width, 1, 1, True)
            x = b.conv(f"{name}.conv2", x, width, 3, st, True)
            x = b.conv(f"{name}.conv3", x, cout, 1, 1, False)
            skip = b.conv(f"{name}.down", src, cout, 1, st, False) if i == 0 else src
            src = b.add(f"{name}.add", skip, x)
    b.head(src, classes)
    return b.network("resnet50", seed)


def resnet18(seed: int = 0, hw: int = 224, classes: int = 1000) -> QuantizedNetwork:
    """ResNet-18 (basic blocks) of *hw* x *hw* x 3 inputs."""
    b = _Builder(seed, hw)
    src = b.conv("conv1", "input", 64, 7, 2, True)
    src = b.maxpool("pool1", src, 3, 2, 1)
    for s, (cout, blocks, stride) in enumerate(RESNET18_STAGES, start=2):
        for i in range(blocks):
            st = stride if i == 0 else 1
            name = f"layer{s}.{i}"
            x = b.conv(f"{name}.conv1", src, cout, 3, st, True)
            x = b.conv(f"{name}.conv2", x, cout, 3, 1, False)
            down = st != 1 or b.shapes[src][2] != cout
            skip = b.conv(f"{name}.down", src, cout, 1, st, False) if down else src
            src = b.add(f"{name}.add", skip, x)
    b.head(src, classes)
    return b.network("resnet18", seed)


def mobilenetv2(seed: int = 0, hw: int = 224, classes: int = 1000) -> QuantizedNetwork:
    """MobileNetV2 (width 1.0) of *hw* x *hw* x 3 inputs: inverted residual blocks of a 1x1 expansion, a 3x3
    depthwise convolution (``groups`` = channels) and a linear 1x1 projection."""
    b = _Builder(seed, hw)
    src = b.conv("conv1", "input", 32, 3, 2, True)
    n = 0
    for t, c, blocks, stride in MOBILENETV2_SETTINGS:
        for i in range(blocks):
            st = stride if i == 0 else 1
            name = f"block{n}"
            cin = b.shapes[src][2]
            x = b.conv(f"{name}.expand", src, cin * t, 1, 1, True) if t != 1 else src
            mid = b.shapes[x][2]
            x = b.conv(f"{name}.dw", x, mid, 3, st, True, groups=mid)
            x = b.conv(f"{name}.project", x, c, 1, 1, False)
            src = b.add(f"{name}.add", src, x, relu=False) if st == 1 and cin == c else x
            n += 1
    src = b.conv("conv_last", src, 1280, 1, 1, True)
    b.head(src, classes)
    return b.network("mobilenetv2", seed)


#: Zoo name -> builder.
IMAGENET = {"resnet18-imagenet": resnet18, "resnet50-imagenet": resnet50, "mobilenetv2-imagenet": mobilenetv2}


def imagenet_network(name: str, seed: int = 0) -> QuantizedNetwork:
    """The network *name* (one of :data:`IMAGENET`) with weights from *seed*."""
    if name not in IMAGENET:
        raise ValueError(f"unknown ImageNet-shaped model {name!r}; they are {', '.join(IMAGENET)}")
    return IMAGENET[name](seed)

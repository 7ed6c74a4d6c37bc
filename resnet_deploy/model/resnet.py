"""ResNet in two variants: torchvision's (the paper, v1.5) and the tutorial's.

Both variants have the same parameters, parameter names and shapes, so one checkpoint loads
into either; what differs is the graph:

* ``torchvision``: the stride of a bottleneck sits on its 3x3 conv (ResNet v1.5), the residual
  is added to the raw output of the last BatchNorm, and the head uses adaptive average pooling,
  so any input size of at least 32x32 works.
* ``seed``: the graph of the tutorial this project started from (see README). The stride sits on
  the first 1x1 conv (ResNet v1), a ReLU follows the last BatchNorm *before* the residual add,
  and the head is ``AvgPool2d(7)``, which only gives a 1x1 map for 224x224 inputs. Users who
  trained that code need exactly that graph, so nothing here "fixes" it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import ARCHS, VARIANTS, ModelMetadata
from resnet_deploy.model.weights import RANDOM, WeightsInfo, init_random_weights, load_weights

Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
Variant = Literal["torchvision", "seed"]
NUM_CLASSES = 1000


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet18/34). The stride is on the first conv in both variants."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        variant: Variant = "torchvision",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample
        # The tutorial's blocks apply a ReLU to the residual branch before the add.
        self.relu_before_add = variant == "seed"

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.relu_before_add:
            out = self.relu(out)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (ResNet50/101/152).

    torchvision puts the stride on the 3x3 conv (v1.5, better accuracy); the tutorial, like the
    original paper's v1, puts it on the first 1x1 conv.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        variant: Variant = "torchvision",
    ) -> None:
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if variant == "seed" else (1, stride)
        self.conv1 = conv1x1(inplanes, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.relu_before_add = variant == "seed"

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.relu_before_add:
            out = self.relu(out)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Stem, four stages, pooling and a linear classifier.

    Each stage opens with a "Conv Block" (a block with a downsample branch, which changes the
    channel count and/or resolution) followed by "Identity Blocks".
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        *,
        variant: Variant = "torchvision",
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise InputError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.variant = variant
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AvgPool2d(7) if variant == "seed" else nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        conv_block = block(self.inplanes, planes, stride, downsample, variant=self.variant)
        self.inplanes = planes * block.expansion
        identity_blocks = [
            block(self.inplanes, planes, variant=self.variant) for _ in range(1, blocks)
        ]
        return nn.Sequential(conv_block, *identity_blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


_SPECS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


def create_resnet(arch: str, variant: Variant = "torchvision") -> ResNet:
    """An untrained ResNet by name, with PyTorch's default initialisation."""
    if arch not in _SPECS:
        raise InputError(f"unknown arch {arch!r}; choose from {', '.join(ARCHS)}")
    block, layers = _SPECS[arch]
    return ResNet(block, layers, variant=variant)


def resnet18(*, variant: Variant = "torchvision") -> ResNet:
    return create_resnet("resnet18", variant)


def resnet34(*, variant: Variant = "torchvision") -> ResNet:
    return create_resnet("resnet34", variant)


def resnet50(*, variant: Variant = "torchvision") -> ResNet:
    return create_resnet("resnet50", variant)


def resnet101(*, variant: Variant = "torchvision") -> ResNet:
    return create_resnet("resnet101", variant)


def resnet152(*, variant: Variant = "torchvision") -> ResNet:
    return create_resnet("resnet152", variant)


@dataclass(frozen=True)
class BuiltModel:
    """A ResNet in eval mode, with the record of how it was built."""

    model: ResNet
    arch: str
    variant: Variant
    weights: WeightsInfo


def build_model(
    arch: str = "resnet50",
    variant: Variant = "torchvision",
    weights: str | Path = RANDOM,
    seed: int = 0,
) -> BuiltModel:
    """The model a user means: an architecture, a variant, and random or file weights.

    ``weights`` is ``"random"`` (deterministic for ``seed``) or the path of a ``.pth``, ``.pt``
    or ``.safetensors`` checkpoint with torchvision's or the tutorial's key names.
    """
    model = create_resnet(arch, variant)
    if str(weights) == RANDOM:
        info = init_random_weights(model, seed)
    else:
        info = load_weights(model, Path(weights))
    return BuiltModel(model=model.eval(), arch=arch, variant=variant, weights=info)


def rebuild_model(metadata: ModelMetadata, weights: str | Path | None = None) -> BuiltModel:
    """The eager model an exported file was made from, as its metadata records it.

    ``weights`` overrides the recorded checkpoint path (the file may have moved), but its
    sha256 must still match the recorded one: a different checkpoint is a different model, and
    comparing against it would be a guess.
    """
    recorded_random = metadata.weights == RANDOM
    if weights is None:
        weights = metadata.weights
        if not recorded_random and not Path(weights).exists():
            raise InputError(
                f"the model was exported from weights {weights}, which is not there "
                "(pass that file as the weights)"
            )
    elif recorded_random and str(weights) != RANDOM:
        raise InputError(
            f"the model was exported with random weights (seed {metadata.seed}), "
            f"not {weights}; drop the weights or re-export"
        )
    built = build_model(metadata.arch, metadata.variant, weights, metadata.seed or 0)
    if not recorded_random and built.weights.sha256 != metadata.weights_sha256:
        raise InputError(
            f"{weights}: sha256 {built.weights.sha256} differs from the {metadata.weights_sha256} "
            "recorded at export: these are not the weights the model was exported from"
        )
    return built

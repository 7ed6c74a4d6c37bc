"""An independent reference for the ``seed`` variant: the tutorial's ResNet50 forward pass,
written as plain functions over a state dict with the tutorial's own key names.

It shares no code with ``resnet_deploy.model.resnet`` (no modules, no block classes), so a test that
finds both bit-identical checks our model against the tutorial's graph itself: the stride on
each stage's first 1x1 conv, a ReLU after the last BatchNorm *before* the residual add, a
1x1 conv + BatchNorm shortcut opening each stage, and ``AvgPool2d(7)`` over a 7x7 map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

STAGES = ((1, 3), (2, 4), (3, 6), (4, 3))  # (stage, bottlenecks): ResNet50's [3, 4, 6, 3]
BN_EPS = 1e-5  # nn.BatchNorm2d's default, which the tutorial keeps


def batch_norm(x: Tensor, state: dict[str, Tensor], name: str) -> Tensor:
    return F.batch_norm(
        x,
        state[f"{name}.running_mean"],
        state[f"{name}.running_var"],
        state[f"{name}.weight"],
        state[f"{name}.bias"],
        training=False,
        eps=BN_EPS,
    )


def conv_bn(x: Tensor, state: dict[str, Tensor], conv: str, bn: str, **conv_args) -> Tensor:
    return batch_norm(F.conv2d(x, state[f"{conv}.weight"], **conv_args), state, bn)


def bottleneck(x: Tensor, state: dict[str, Tensor], prefix: str, stride: int) -> Tensor:
    out = F.relu(conv_bn(x, state, f"{prefix}.conv1", f"{prefix}.bn1", stride=stride))
    out = F.relu(conv_bn(out, state, f"{prefix}.conv2", f"{prefix}.bn2", padding=1))
    out = F.relu(conv_bn(out, state, f"{prefix}.conv3", f"{prefix}.bn3"))  # ReLU before the add
    shortcut = x
    if f"{prefix}.downsample.0.weight" in state:
        shortcut = conv_bn(
            x, state, f"{prefix}.downsample.0", f"{prefix}.downsample.1", stride=stride
        )
    return F.relu(out + shortcut)


def tutorial_forward(state: dict[str, Tensor], x: Tensor) -> Tensor:
    """Logits ``[N, 1000]`` for 224x224 inputs, from a state dict with ``stageN.*`` keys."""
    out = F.relu(conv_bn(x, state, "conv1", "bn1", stride=2, padding=3))
    out = F.max_pool2d(out, kernel_size=3, stride=2, padding=1)
    for stage, blocks in STAGES:
        for index in range(blocks):
            stride = 2 if stage > 1 and index == 0 else 1
            out = bottleneck(out, state, f"stage{stage}.{index}", stride)
    out = torch.flatten(F.avg_pool2d(out, 7), 1)
    return F.linear(out, state["fc.weight"], state["fc.bias"])

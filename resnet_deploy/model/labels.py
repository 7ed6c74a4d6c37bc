"""ImageNet's 1000 class names, in class-index order, shipped as package data.

The list is torchvision 0.29.1's ``_IMAGENET_CATEGORIES`` (``torchvision/models/_meta.py``),
one name a line. Torchvision already tells apart the two names ImageNet repeats (index 134
"crane bird" and 517 "crane"; 638 "maillot" and 639 "maillot tank suit"), so every line is
unique. Reading it from a file keeps torchvision out of our dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

IMAGENET_CLASSES_FILE = "imagenet_classes.txt"
NUM_IMAGENET_CLASSES = 1000


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The class names; index i is the name of logit i."""
    text = resources.files("resnet_deploy.model").joinpath(IMAGENET_CLASSES_FILE).read_text("utf-8")
    names = tuple(text.splitlines())
    if len(names) != NUM_IMAGENET_CLASSES or len(set(names)) != NUM_IMAGENET_CLASSES:
        raise RuntimeError(f"{IMAGENET_CLASSES_FILE}: expected 1000 unique names, broken install")
    return names


@dataclass(frozen=True)
class ClassScore:
    class_index: int
    class_name: str
    probability: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise, in float64, so small probabilities keep their digits and rows sum to 1."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> list[ClassScore]:
    """The ``k`` most likely classes, most likely first (ties by class index)."""
    names = imagenet_classes()
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [ClassScore(int(i), names[i], float(probabilities[i])) for i in order]

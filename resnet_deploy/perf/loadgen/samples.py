"""LoadGen's query sample library: the inputs, held in memory while LoadGen times, and labels."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from resnet_deploy.data.images import load_image
from resnet_deploy.errors import InputError
from resnet_deploy.files import read_text_file


class Preprocessing(NamedTuple):
    """Image size and normalisation: from the model's metadata, or ImageNet's for an endpoint."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def read_labels(images: list[Path], folder: Path, labels: Path | None, classes: int) -> list[int]:
    """Each image's class: from ``labels`` ("name index" lines; name relative to the folder, or
    the bare file name, as in ImageNet's val_map.txt), else from a class-index subfolder."""
    table: dict[str, int] = {}
    if labels is not None:
        for number, line in enumerate(read_text_file(labels, "labels file").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, index = line.strip().rpartition("\t" if "\t" in line else " ")
            if not name or not index.strip().isdigit():
                raise InputError(
                    f"{labels}:{number}: expected 'name<TAB>class index', got {line!r}"
                )
            table[name.strip()] = int(index)
    found = []
    for path in images:
        relative = path.relative_to(folder)
        if labels is not None:
            label = table.get(relative.as_posix(), table.get(path.name))
            where = f"{labels} has no line for {relative.as_posix()}"
        else:
            top = relative.parts[0] if len(relative.parts) > 1 else ""
            label = int(top) if top.isdigit() else None
            where = f"{path}: not in a class-index subfolder (0/, 1/, ...) and no labels file given"
        if label is None:
            raise InputError(f"accuracy needs a label for every image: {where}")
        if not 0 <= label < classes:
            raise InputError(f"{path}: class {label} is outside the model's 0..{classes - 1}")
        found.append(label)
    return found


class SampleLibrary:
    """LoadGen's QSL: model inputs, made on LoadGen's load call and dropped on its unload."""

    def __init__(
        self,
        preprocessing: Preprocessing,
        dtype: np.dtype,
        images: list[Path] | None,
        count: int,
    ):
        self.preprocessing = preprocessing
        self.dtype = dtype
        self.images = images
        self.count = count
        self.loaded: dict[int, np.ndarray] = {}

    def load(self, indices: list[int]) -> None:
        for index in indices:
            if index not in self.loaded:
                self.loaded[index] = self._make(index)

    def unload(self, indices: list[int]) -> None:
        for index in indices:
            self.loaded.pop(index, None)

    def batch(self, indices: list[int]) -> np.ndarray:
        return np.stack([self.loaded[i] for i in indices])

    def _make(self, index: int) -> np.ndarray:
        size, mean, std = self.preprocessing
        if self.images is None:
            shape = (3, size, size)
            array = np.random.default_rng(index).standard_normal(shape, dtype=np.float32)
        else:
            array = load_image(self.images[index], size, mean, std)
        return array.astype(self.dtype, copy=False)

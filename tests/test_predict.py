from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image
from serving import count_model_reads  # tests/ is on sys.path under pytest's default import mode

from resnet_deploy.cli import main
from resnet_deploy.data.images import load_image
from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import imagenet_classes, softmax
from resnet_deploy.model.onnxfile import load_with_metadata
from resnet_deploy.model.resnet import rebuild_model
from resnet_deploy.predict import PredictOptions, predict

GOOD = ("noise.jpg", "gradient.png", "grey.png", "sub/alpha.png", "wide.bmp")
BAD = ("broken.jpg", "notes.png")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five readable images of several modes and shapes, one truncated JPEG, one text file."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(folder / GOOD[0])
    Image.fromarray(np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)).save(folder / GOOD[1])
    Image.fromarray(rng.integers(0, 256, (260, 180), dtype=np.uint8)).save(folder / GOOD[2])
    rgba = rng.integers(0, 256, (224, 224, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / GOOD[3])
    Image.fromarray(rng.integers(0, 256, (120, 500, 3), dtype=np.uint8)).save(folder / GOOD[4])
    jpeg = (folder / GOOD[0]).read_bytes()
    (folder / BAD[0]).write_bytes(jpeg[: len(jpeg) // 2])
    (folder / BAD[1]).write_text("not an image")
    return folder


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, ["predict", *map(str, args)], catch_exceptions=False)


def test_cli_prints_good_images_and_names_bad_ones(r18: Path, photos: Path) -> None:
    result = invoke(r18, photos, "--top", 3)
    assert result.exit_code == 2
    for name in GOOD:
        assert str(photos / name) in result.stdout
    for name in BAD:
        assert str(photos / name) not in result.stdout
    assert f"{photos / BAD[0]}: broken or truncated image" in result.stderr
    assert f"{photos / BAD[1]}: cannot read image" in result.stderr
    assert "2 of 7 inputs failed" in result.stderr
    body = result.stdout.split("-----\n", 1)[1].splitlines()  # the table, below its rule
    assert len(body) == 3 * len(GOOD)
    ranks = []
    for line in body:
        tokens = line.split()
        rank, index, *name, _ = tokens if tokens[0].isdigit() else tokens[1:]  # drop the path
        assert " ".join(name) == imagenet_classes()[int(index)]
        ranks.append(int(rank))
    assert ranks == [1, 2, 3] * len(GOOD)


def test_probabilities_sum_to_one_sorted_with_imagenet_names(r18: Path, photos: Path) -> None:
    report = predict(r18, [photos / GOOD[0]], PredictOptions(top=1000))
    (prediction,) = report.predictions
    probabilities = [s.probability for s in prediction.top]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-12)
    assert probabilities == sorted(probabilities, reverse=True)
    assert sorted(s.class_index for s in prediction.top) == list(range(1000))
    assert all(s.class_name == imagenet_classes()[s.class_index] for s in prediction.top)


def test_top_class_is_the_eager_model_argmax(
    r18: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = count_model_reads(monkeypatch)
    report = predict(r18, [photos], PredictOptions(top=5, batch_size=2))
    assert reads == [r18]  # metadata and session from one read
    assert [p.path for p in report.predictions] == sorted(photos / name for name in GOOD)
    assert sorted(e.path for e in report.errors) == sorted(photos / name for name in BAD)
    _, metadata = load_with_metadata(r18)
    eager = rebuild_model(metadata).model
    for prediction in report.predictions:
        array = load_image(prediction.path, metadata.image_size, metadata.mean, metadata.std)
        with torch.inference_mode():
            logits = eager(torch.from_numpy(array[None])).numpy()
        expected = softmax(logits)[0]
        assert prediction.top[0].class_index == int(np.argmax(logits))
        for score in prediction.top:
            assert score.probability == pytest.approx(expected[score.class_index], abs=1e-5)


def test_progress_counts_every_listed_image_once(r18: Path, photos: Path) -> None:
    counts = []
    predict(
        r18,
        [photos, photos / "none-*.png"],
        PredictOptions(batch_size=2),
        progress=lambda step, done=None, total=None: counts.append((done, total)),
    )
    listed = len(GOOD) + len(BAD)  # the pattern matches no file: an error, not an image to count
    counted = [c for c in counts if c[1] is not None]
    assert counted[0] == (0, listed) and counted[-1] == (listed, listed)
    assert [done for done, _ in counted] == sorted(done for done, _ in counted)


def test_json_record_parses(r18: Path, photos: Path) -> None:
    result = invoke(r18, photos / GOOD[1], photos / BAD[1], "--top", 2, "--json")
    assert result.exit_code == 2
    record = json.loads(result.stdout)
    (prediction,) = record["predictions"]
    assert prediction["path"] == str(photos / GOOD[1])
    assert [set(s) for s in prediction["top"]] == [{"class_index", "class_name", "probability"}] * 2
    assert [e["path"] for e in record["errors"]] == [str(photos / BAD[1])]
    assert record["metadata"]["arch"] == "resnet18"


def test_fixed_batch_pads_the_last_batch(exported: Callable, r18: Path, photos: Path) -> None:
    fixed = exported("resnet18", batch=2).output  # same seeded weights as ``r18``
    images = [photos / name for name in GOOD]  # 5: two full batches and one padded
    padded = predict(fixed, images)
    assert padded.batch_size == 2 and not padded.errors
    dynamic = predict(r18, images)
    assert [p.path for p in padded.predictions] == images
    for got, want in zip(padded.predictions, dynamic.predictions, strict=True):
        assert [s.class_index for s in got.top] == [s.class_index for s in want.top]
        assert [s.probability for s in got.top] == pytest.approx(
            [s.probability for s in want.top], abs=1e-6
        )
    with pytest.raises(InputError, match="fixed batch of 2"):
        predict(fixed, images, PredictOptions(batch_size=4))


def test_glob_patterns_are_expanded(r18: Path, photos: Path) -> None:
    result = invoke(r18, f"{photos}/**/*.png", "--top", 1)
    assert result.exit_code == 2  # notes.png matches too, and is not an image
    for name in ("gradient.png", "grey.png", "sub/alpha.png"):
        assert str(photos / name) in result.stdout
    assert str(photos / GOOD[0]) not in result.stdout


def test_no_images_found_is_one_line_error(r18: Path, photos: Path) -> None:
    result = invoke(r18, f"{photos}/*.tiff")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: no images found ({photos}/*.tiff: no file matches this pattern)"
    ]


def test_help_has_an_example() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "resnet-deploy predict " in result.stdout

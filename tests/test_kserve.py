"""The KServe InferenceService manifest that `triton` writes beside the model repository."""

from __future__ import annotations

import pytest

from resnet_deploy.serving.repository import TritonOptions, kserve_manifest, write_model_repository


def fields(text: str) -> dict[str, str]:
    """The manifest's scalar values by dotted path (this file's subset of YAML: two-space
    indented mappings, quoted or bare scalars, comments), so no YAML library is needed."""
    values, path = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        key, _, value = line.strip().partition(":")
        path = [*path[:depth], key]
        if value.strip():
            values[".".join(path)] = value.strip().strip('"')
    return values


@pytest.mark.slow
def test_manifest_beside_the_repository_names_model_protocol_and_runtime(exported, tmp_path):
    model = exported("resnet18").output
    result = write_model_repository(model, TritonOptions(repo=tmp_path / "models"))
    assert result.manifest_file == tmp_path / "models-resnet18-inferenceservice.yaml"
    values = fields(result.manifest_file.read_text())
    model_spec = "spec.predictor.model"
    assert values == {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata.name": "resnet18",
        f"{model_spec}.modelFormat.name": "triton",
        f"{model_spec}.protocolVersion": "v2",
        f"{model_spec}.runtime": "kserve-tritonserver",
        f"{model_spec}.storageUri": "s3://CHANGE-ME/models",
        f"{model_spec}.resources.limits.nvidia.com/gpu": "1",
    }
    assert "\t" not in result.manifest_file.read_text()
    # A manifest already there (its storageUri filled in by hand) is kept unless forced.
    edited = result.manifest_file.read_text().replace("s3://CHANGE-ME", "gs://bucket")
    result.manifest_file.write_text(edited)
    again = write_model_repository(model, TritonOptions(repo=tmp_path / "models", version=2))
    assert result.manifest_file.read_text() == edited
    assert any("kept (--force rewrites it)" in note for note in again.notes)
    options = TritonOptions(repo=tmp_path / "models", version=2, force=True)
    write_model_repository(model, options)
    assert "s3://CHANGE-ME" in result.manifest_file.read_text()


@pytest.mark.parametrize(
    ("name", "resource"),
    [("resnet50", "resnet50"), ("ResNet_50.v2", "resnet-50-v2"), ("1e5", "m-1e5")],
)
def test_names_become_kubernetes_names_and_stay_strings(tmp_path, name, resource):
    text = kserve_manifest(name, tmp_path / "repo", gpu=False)
    values = fields(text)
    assert values["metadata.name"] == resource
    assert f'name: "{resource}"' in text  # quoted: 1e5 must not read as a number
    assert not any("resources" in key for key in values)
    assert f'model "{name}"' in text

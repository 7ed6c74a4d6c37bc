"""`page` renders whatever report.json holds: any string where the record has text, any float
(NaN, infinities, 1e308, and the strings a record stores them as) where it has a number. The
page escapes by construction, shows non-finite values as "n/a", and never fails."""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_html_report import Page  # tests/ is on sys.path under pytest's default import mode

from resnet_deploy.pipeline import RunOptions, run_pipeline
from resnet_deploy.report.page import write_page

HOSTILE = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'onmouseover='alert(1)",
    "javascript:alert(1)",
    "$\\frac$",
    "a$b",
    "</style><script>",
    "&lt;script&gt;",
    "nan",
]
NON_FINITE_TEXT = {"nan", "inf", "-inf"}
strings = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 5e-324]),
    st.sampled_from(sorted(NON_FINITE_TEXT)),  # as to_record writes them
)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real `run --int8` record, so every value position the page reads is present."""
    folder = tmp_path_factory.mktemp("untrusted") / "run"
    run_pipeline(
        RunOptions(folder=folder, arch="resnet18", batch_sizes=(1, 2), duration_s=0.2, int8=True)
    )
    return json.loads((folder / "report.json").read_text())


def replaced(value: Any, pick: random.Random, texts: list[str], numbers: list[Any]) -> Any:
    """``value`` with each string and float leaf swapped, by ``pick``, for a drawn one."""
    if isinstance(value, dict):
        return {k: replaced(v, pick, texts, numbers) for k, v in value.items()}
    if isinstance(value, list):
        return [replaced(v, pick, texts, numbers) for v in value]
    if isinstance(value, float) or (isinstance(value, str) and value in NON_FINITE_TEXT):
        return pick.choice(numbers) if pick.random() < 0.7 else value
    if isinstance(value, str):
        return pick.choice(texts) + value if pick.random() < 0.7 else value
    return value


@pytest.mark.slow
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    texts=st.lists(strings, min_size=1, max_size=4),
    numbers=st.lists(floats, min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_any_strings_and_floats_in_the_record_render_as_text_and_n_a(
    record: dict[str, Any],
    tmp_path: Path,
    texts: list[str],
    numbers: list[Any],
    seed: int,
) -> None:
    pick = random.Random(seed)  # which leaves change: a seed keeps the example small
    folder = Path(tempfile.mkdtemp(dir=tmp_path))  # one per example: hypothesis repeats seeds
    hostile = replaced(record, pick, texts, numbers)
    (folder / "report.json").write_text(json.dumps(hostile))  # NaN and infinity as JSON allows
    text = write_page(folder, force=True).read_text()

    page = Page(text).root
    assert not page.all("script") and "<script" not in text.lower()
    assert not [e for e in page.all() if any(name.startswith("on") for name in e.attrs)]
    assert all(a.attrs["href"].startswith(("./", "#")) for a in page.all("a"))
    cells = [c.text.strip() for c in page.all("td")]
    assert not NON_FINITE_TEXT & set(cells), "a non-finite value shown as a number"

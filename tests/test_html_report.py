"""The run's HTML page: produced for a passing and a failing run, parsed element by element, and
rendered in a real headless Chromium where one is installed."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image

import resnet_deploy
import resnet_deploy.convert.export as export_module
from resnet_deploy.cli import main
from resnet_deploy.files import sha256_of
from resnet_deploy.pipeline import RunOptions, run_pipeline
from resnet_deploy.report import charts
from resnet_deploy.report.page import render_page, write_page
from resnet_deploy.report.records import format_cell
from tests.helpers import tampered

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
BATCHES = (1, 2)


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        """Descendants by tag and/or class, in document order."""
        found = []
        for child in self.children:
            classes = child.attrs.get("class", "").split()
            if (tag is None or child.tag == tag) and (cls is None or cls in classes):
                found.append(child)
            found += child.all(tag, cls)
        return found

    def by_id(self, ident: str) -> Element:
        matches = [e for e in self.all() if e.attrs.get("id") == ident]
        assert len(matches) == 1, f"{len(matches)} elements with id {ident}"
        return matches[0]

    def table(self, name: str) -> list[list[str]]:
        """The body rows of the one table of class ``name``, as cell texts."""
        (rows,) = self.tables(name)
        return rows

    def tables(self, name: str) -> list[list[list[str]]]:
        return [
            [[cell.text for cell in row.all("td")] for row in table.all("tbody")[0].all("tr")]
            for table in self.all("table", name)
        ]


class Page(HTMLParser):
    """A small DOM: every element with its children and all the text inside it."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.feed(text)
        self.close()
        assert [e.tag for e in self.stack] == ["#document"], "unclosed elements"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text_parts.append(data)


def parse(folder: Path) -> Element:
    return Page((folder / "report.html").read_text()).root


def series_points(svg: Element) -> list[int]:
    """How many points each line of a chart has: matplotlib draws a line as one path inside
    the group that ``charts`` names ``KEY-series-N``."""
    groups = [g for g in svg.all("g") if "-series-" in g.attrs.get("id", "")]
    return [len(g.all("path")[0].attrs["d"].split("L")) for g in groups]


def markers(svg: Element, gid: str) -> int:
    """How many markers matplotlib drew for the artist ``charts`` named ``gid``."""
    return len(svg.by_id(gid).all("use"))


@pytest.fixture(scope="module")
def passing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `run --int8` of ResNet18, with short timings."""
    folder = tmp_path_factory.mktemp("page") / "run"
    args = ["run", "--arch", "resnet18", "-o", str(folder), "--int8", "--duration", "0.3"]
    args += ["--batch-sizes", ",".join(map(str, BATCHES))]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose exported file has one conv's weights scaled by 5%."""
    folder = tmp_path_factory.mktemp("page") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_module, "simplify", tampered(export_module.simplify))
        report = run_pipeline(RunOptions(folder=folder, arch="resnet18", duration_s=0.3))
    assert not report.passed
    return folder


@pytest.mark.slow
def test_a_passing_run_page_holds_every_section_table_and_chart(passing: Path) -> None:
    record = json.loads((passing / "report.json").read_text())
    page = parse(passing)
    (head,) = page.all("head")
    (policy,) = [m for m in head.all("meta") if m.attrs.get("http-equiv")]
    assert "default-src 'none'" in policy.attrs["content"]  # the browser may fetch nothing
    assert not page.all("script") and not page.all("link")

    (header,) = page.all("header")
    assert "PASS" in header.all("h1")[0].text
    assert "resnet18, torchvision variant" in header.text
    assert sha256_of(passing / "model.onnx") in header.text
    assert "opset 18" in header.text and "random (seed 0)" in header.text
    (command,) = header.all("p", "command")
    assert command.text.startswith("command: resnet-deploy run --arch resnet18")
    assert "--int8" in command.text
    assert record["environment"]["cpu_model"] in header.text
    assert "physical cores" in header.text and "onnxruntime" in header.text
    headline = header.all("p", "speedup")[0].text
    top = record["bench"]["batches"][-1]
    assert (
        f"{top['speedup_vs_torch']:.2f}x" in headline and f"batch {top['batch_size']}" in headline
    )
    assert "Deploy:" in header.text

    ids = {e.attrs["id"] for e in page.all("section")}
    assert {"verify", "bench", "int8", "files"} <= ids and not {"profile", "tune"} & ids

    shapes = page.table("shapes")
    assert len(shapes) == len(record["verify"]["shapes"]) >= 3
    assert all(row[-1] == "pass" for row in shapes)
    layers = page.table("layers")
    localization = record["verify"]["localization"]
    assert [row[0] for row in layers] == [layer["name"] for layer in localization["layers"]]
    assert all(row[-1] == "within" for row in layers)

    bench = page.table("bench")
    assert [int(row[0]) for row in bench] == list(BATCHES)
    for row, batch in zip(bench, record["bench"]["batches"], strict=True):
        assert row[8] == format_cell(batch["images_per_s"])  # the JSON record is the twin
        assert row[-1] == f"{batch['speedup_vs_torch']:.2f}x"
    assert [int(row[0]) for row in page.table("int8-speed")] == list(BATCHES)
    accuracy = {row[0]: row[1:] for row in page.table("int8-accuracy")}
    assert accuracy["verdict"] == ["pass", "pass"]
    guard = record["optimize"]["guard"]["shapes"]
    lowest = min(s["errors"]["min_cosine_similarity"] for s in guard)
    assert accuracy["min cosine similarity"][1] == f"{lowest:.6f}"
    assert {"top-1 agreement (lowest)", "top-5 agreement (lowest)", "min SQNR (dB)"} <= set(
        accuracy
    )

    charts = page.all("svg")
    titles = [svg.all("title")[0].text for svg in charts]
    assert titles[0] == "per-layer error against the fp32 noise floor"
    assert series_points(charts[0])[-1] == len(localization["layers"])
    (throughput,) = [
        svg for svg, title in zip(charts, titles, strict=True) if "throughput" in title
    ]
    assert series_points(throughput) == [len(BATCHES)] * 3  # ONNX Runtime, eager, int8
    for batch in BATCHES:
        (cdf,) = [
            svg for svg, t in zip(charts, titles, strict=True) if t.endswith(f"batch {batch}")
        ]
        assert len(series_points(cdf)) == 2 and min(series_points(cdf)) >= 2
        marks = [t.text for t in cdf.all("text") if t.text.startswith(("p50", "p99"))]
        assert len(marks) == 4  # p50 and p99 of both engines

    for times in record["bench"]["run_times"]:  # raw latencies, one per timed run
        batch = next(
            b for b in record["bench"]["batches"] if b["batch_size"] == times["batch_size"]
        )
        runs = batch["runs"] if times["engine"] == "onnxruntime" else batch["torch_runs"]
        assert len(times["latencies_ms"]) == runs > 0
    assert {"report.html", "model.int8.onnx"} <= {a.text for a in page.by_id("files").all("a")}


@pytest.mark.slow
def test_a_failing_run_page_shows_the_first_divergent_layer(failing: Path) -> None:
    record = json.loads((failing / "report.json").read_text())
    page = parse(failing)
    (header,) = page.all("header")
    assert "FAIL" in header.all("h1")[0].text
    assert "Do not deploy" in header.text and "layer2.0.conv1" in header.text
    assert sha256_of(failing / "model.onnx") in header.text
    assert {e.attrs["id"] for e in page.all("section")} == {"verify", "bench", "files"}

    (box,) = page.all("div", "divergence")
    assert box.all("p", "name")[0].text == "layer2.0.conv1"
    layers = page.table("layers")
    first = [row[0] for row in layers].index("layer2.0.conv1")
    assert all(row[-1] == "within" for row in layers[:first]) and layers[first][-1] == "BEYOND"
    (table,) = page.all("table", "layers")
    marked = [row.attrs.get("class") == "beyond" for row in table.all("tbody")[0].all("tr")]
    assert marked == [
        layer["beyond_tolerance"] for layer in record["verify"]["localization"]["layers"]
    ]
    assert all(row[-1] == "FAIL" for row in page.table("shapes"))
    assert page.by_id("verify").all("ul", "failures")

    (chart,) = page.all("svg")
    assert any(t.text == "first divergence: layer2.0.conv1" for t in chart.all("text"))
    assert markers(chart, "layers-series-0") == len(layers)
    assert markers(chart, "layers-beyond") == sum(marked) > 0  # the divergent ones again
    assert markers(chart, "layers-first") == 1
    assert "Skipped: verification failed" in page.by_id("bench").text
    assert not page.all("table", "bench")


@pytest.mark.slow
def test_profile_and_tune_records_beside_the_run_are_shown_defensively(
    failing: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "run"
    shutil.copytree(failing, folder, ignore=shutil.ignore_patterns("*.onnx"))
    rows = [{"layer": f"layer{i}", "ms": 0.5 * i, "share": 0.1, "shape": [1, 64]} for i in range(4)]
    (folder / "profile.json").write_text(json.dumps(rows))
    tune = {"winner": "int8 x2", "valid": True, "candidates": [{"threads": 1, "p99_ms": 3.0}]}
    (folder / "tune.json").write_text(json.dumps(tune))
    figure = Figure(figsize=(2, 1))
    figure.subplots().plot([0, 1], [1, 0])
    figure.savefig(folder / "profile_roofline.png")
    (folder / "tune_plot.png").write_text("not a png")

    result = CliRunner().invoke(main, ["page", str(folder)])
    assert result.exit_code == 2 and "--force" in result.output  # never overwritten silently
    result = CliRunner().invoke(main, ["page", str(folder), "--force"])
    assert result.exit_code == 0, result.output
    page = parse(folder)
    profile, tuned = page.by_id("profile"), page.by_id("tune")
    assert [row[0] for row in profile.table("profile")] == [r["layer"] for r in rows]
    assert profile.table("profile")[0][3] == "[1, 64]"
    (image,) = profile.all("img")
    assert image.attrs["src"].startswith("data:image/png;base64,iVBOR")
    assert tuned.tables("tune") == [[["int8 x2", "yes"]], [["1", "3.000"]]]
    assert "tune_plot.png: not shown" in tuned.text

    (folder / "tune.json").write_text("{not json")
    assert write_page(folder, force=True).exists()
    assert "tune.json: not shown" in parse(folder).by_id("tune").text


def test_page_needs_a_run_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["page", str(tmp_path)])
    assert result.exit_code == 2 and "holds no report.json" in result.output
    (tmp_path / "report.json").write_text("[1, 2]")
    result = CliRunner().invoke(main, ["page", str(tmp_path)])
    assert result.exit_code == 2 and "not the record of a `resnet-deploy run`" in result.output
    assert not (tmp_path / "report.html").exists()


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(1)>'


@pytest.mark.slow
def test_hostile_strings_in_a_record_or_folder_are_shown_as_text(
    failing: Path, tmp_path: Path
) -> None:
    record = json.loads((failing / "report.json").read_text())
    record["command"] = f"resnet-deploy run -o '{HOSTILE}'"
    record["export"]["output"] = f"{HOSTILE}.onnx"
    record["artifacts"] = [f"{HOSTILE}.csv"]
    found = record["verify"]["localization"]
    divergent = next(x for x in found["layers"] if x["name"] == found["first_divergence"]["name"])
    divergent["name"] = found["first_divergence"]["name"] = HOSTILE
    (tmp_path / "profile.json").write_text(json.dumps([{HOSTILE: HOSTILE}]))
    unsafe_name = "profile<img src=x onerror=alert(1)>.png"  # a file name may hold markup too
    (tmp_path / unsafe_name).write_text("not a png")

    text = render_page(record, tmp_path)
    page = Page(text).root
    assert not page.all("script") and not [e for e in page.all() if "onerror" in e.attrs]
    assert len(page.all("img")) == 0 and "<script>" not in text
    (header,) = page.all("header")
    assert f"first departs from the eager model at {HOSTILE}" in header.text
    assert header.all("p", "command")[0].text == f"command: resnet-deploy run -o '{HOSTILE}'"
    assert f"{Path(HOSTILE).name}.onnx (" in header.text  # the file's name, not its path
    assert page.all("div", "divergence")[0].all("p", "name")[0].text == HOSTILE
    (chart,) = page.all("svg")
    assert f"first divergence: {HOSTILE}" in [t.text for t in chart.all("text")]
    assert HOSTILE in [row[0] for row in page.table("layers")]
    (profile,) = page.by_id("profile").all("table", "profile")
    assert [th.text for th in profile.all("th")] == [HOSTILE]
    assert f"{unsafe_name}: not shown" in page.by_id("profile").text
    links = {a.text: a.attrs["href"] for a in page.by_id("files").all("a")}
    artifact = Path(f"{HOSTILE}.csv").name
    assert links[artifact] == "./" + quote(artifact) and links[unsafe_name] == "./" + quote(
        unsafe_name
    )


@pytest.mark.slow
def test_the_page_holds_no_path_of_this_installation(passing: Path) -> None:
    text = (passing / "report.html").read_text()
    assert "file:" not in text and "/site-packages/" not in text
    installed = (Path(resnet_deploy.__file__).parent.parent, Path(sys.prefix), Path.home())
    assert not [str(path) for path in installed if str(path) in text]


def test_charts_are_deterministic_inline_svg_with_their_own_ids() -> None:
    lines = [charts.Series("a <b> & c", [1, 2, 4], [3.0, 5.0, 4.0], charts.ORT)]
    first = charts.throughput_svg(lines, [1, 2, 4])
    assert first == charts.throughput_svg(lines, [1, 2, 4])  # no date, no random ids
    assert first.startswith("<svg") and "<?xml" not in first and "<!DOCTYPE" not in first
    svg = Page(first).root
    assert svg.all("title")[0].text == "throughput against batch size"
    assert series_points(svg) == [3] and markers(svg, "throughput-series-0") == 3
    assert "a <b> & c" in [t.text for t in svg.all("text")] and "<b>" not in first
    curve = charts.Series("runs", [1.0, 1.0, 2.0, 2.0], [0.0, 0.5, 0.5, 1.0], charts.ORT)
    other = charts.latency_cdf_svg(4, [curve], [charts.Marker(1.5, "p50 1.5")])
    assert "p50 1.5" in [t.text for t in Page(other).root.all("text")]

    def ids(text: str) -> set[str]:
        """Marker and clip-path ids, which ``use`` and ``clip-path`` refer to."""
        return set(re.findall(r'id="([mp][0-9a-f]{10})"', text))

    assert ids(first) and ids(other) and not ids(first) & ids(other)  # one page, no clash


def test_importing_the_report_loads_neither_matplotlib_nor_jinja() -> None:
    code = (
        "import sys, resnet_deploy.report.page, resnet_deploy.report.charts; "
        "print(sorted({'matplotlib', 'jinja2'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def chromium() -> str | None:
    return next(
        (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
    )


@pytest.mark.slow
@pytest.mark.skipif(
    chromium() is None, reason="Chromium is not installed (apt-get install chromium)"
)
@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY,
    reason="Chromium reserves more address space than the address-space limit (prlimit --as)",
)
@pytest.mark.parametrize("run", ["passing", "failing"])
def test_the_page_renders_in_headless_chromium(
    run: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    page = request.getfixturevalue(run) / "report.html"
    shot, pdf = tmp_path / "page.png", tmp_path / "page.pdf"
    logs = browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,2400")
    assert not [line for line in logs if ":CONSOLE" in line], logs
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1200)
    assert (pixels < 200).mean() > 0.02  # text, tables and charts, not a blank page
    assert len(np.unique(pixels)) > 20
    browse(page, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.read_bytes().count(b"/Type /Page") >= 2


def browse(page: Path, work: Path, *args: str) -> list[str]:
    """Run headless Chromium once on ``page`` (bounded in time, stopped by its process group);
    return its log lines, where the page's console messages appear."""
    profile = work / f"profile-{len(list(work.iterdir()))}"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu"]
    command += ["--disable-background-networking", "--disable-component-update"]
    command += ["--disable-sync", "--no-first-run", f"--user-data-dir={profile}"]
    command += ["--enable-logging=stderr", "--v=0", "--hide-scrollbars", *args, page.as_uri()]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output[-2000:]
    return output.splitlines()

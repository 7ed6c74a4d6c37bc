"""The run's page: one self-contained HTML file (``FOLDER/report.html``) to open offline or share.

It is rendered from the run's JSON record, so the page and ``report.json`` cannot disagree,
and ``resnet-deploy page FOLDER`` can render it again once ``profile`` or ``tune`` have left
their records (``profile.json``, ``tune.json``, and PNG plots) in the folder. The markup is in
Jinja templates with autoescaping (``templates/``), what they show is computed in ``sections``,
charts are matplotlib's inline SVG (``charts``), the stylesheet and images are embedded, and a
Content-Security-Policy forbids the browser to fetch anything: the page needs no network and
no JavaScript, and prints as it reads.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import InputError
from resnet_deploy.files import check_output_path, read_text_file, write_text_atomic
from resnet_deploy.report.records import format_cell
from resnet_deploy.report.sections import (
    bench_section,
    extra_section,
    file_names,
    first_divergence,
    int8_section,
    number,
    shown,
    verify_section,
    verify_summary,
)

if TYPE_CHECKING:
    import jinja2

PAGE_NAME = "report.html"
RECORD_NAME = "report.json"
EXTRAS = ("profile", "tune")  # records other commands leave in a run folder


def write_page(folder: Path, *, output: Path | None = None, force: bool = False) -> Path:
    """Render ``folder/report.json`` (and any profile or tune records there) to a page."""
    folder = Path(folder)
    source = folder / RECORD_NAME
    if not source.is_file():
        raise InputError(f"{folder}: holds no {RECORD_NAME}; is it a `resnet-deploy run` folder?")
    output = check_output_path(output or folder / PAGE_NAME, force=force, inputs=[source])
    try:
        record = json.loads(read_text_file(source, "run record"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not a JSON record ({exc})") from None
    if not isinstance(record, dict) or not {"export", "verify"} <= record.keys():
        raise InputError(f"{source}: not the record of a `resnet-deploy run`")
    try:
        page = render_page(record, folder)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # another shape or version
        raise InputError(
            f"{source}: lacks what the page shows ({type(exc).__name__}: {exc})"
        ) from None
    write_text_atomic(output, page, replace=force)
    return output


@functools.cache
def environment() -> jinja2.Environment:
    """Templates from the installed package (a wheel as much as a checkout), always escaped."""
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("resnet_deploy.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the test, not the page
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["inline"] = markupsafe.Markup  # for matplotlib's SVG, escaped by matplotlib
    env.filters["file_url"] = file_url
    env.filters["g"] = shown  # a number as "%g", or "n/a" for NaN, infinity or no number
    return env


def render_page(record: dict[str, Any], folder: Path) -> str:
    """The whole page for one run record; ``folder`` is searched for profile and tune results."""
    meta = record["export"]["metadata"]
    verdict = "PASS" if passed(record) else "FAIL"
    extras = [e for e in (extra_section(folder, name) for name in EXTRAS) if e is not None]
    links = [("verify", "Verify"), ("bench", "Bench")]
    if record.get("optimize"):
        links.append(("int8", "fp32 and int8"))
    links += [(e.name, e.name.capitalize()) for e in extras]
    links.append(("files", "Files"))
    return (
        environment()
        .get_template("page.html.j2")
        .render(
            title=f"{meta['arch']} ({meta['variant']}) {meta['precision']}: {verdict}",
            verdict=verdict,
            meta=meta,
            command=record.get("command") or "",
            headline=headline(record),
            facts=[("Model", model_facts(record)), ("Machine", machine_facts(record))],
            links=links,
            verify=verify_section(record["verify"]),
            bench=bench_section(record),
            int8=int8_section(record) if record.get("optimize") else None,
            extras=extras,
            files=file_names(record, folder),
            record_name=RECORD_NAME,
        )
    )


def file_url(name: str) -> str:
    """A link to a file beside the page: always relative and percent-encoded, so a file name
    such as ``javascript:...`` or ``a#b`` is a file, never a scheme or a fragment."""
    from urllib.parse import quote

    return "./" + quote(name)


def passed(record: dict[str, Any]) -> bool:
    """As ``RunReport.passed``: verified, benched, and int8 (if asked for) past its guard."""
    optimize = record.get("optimize")
    int8_ok = not optimize or optimize.get("output") is not None
    return bool(record["verify"]["passed"]) and record.get("bench") is not None and int8_ok


def model_facts(record: dict[str, Any]) -> list[tuple[str, str]]:
    export, meta = record["export"], record["export"]["metadata"]
    weights = meta["weights"]
    if meta.get("weights_sha256"):
        weights += f" (sha256 {meta['weights_sha256']})"
    elif meta.get("seed") is not None and weights == "random":
        weights += f" (seed {meta['seed']})"
    sha256 = record.get("model_sha256") or (record.get("bench") or {}).get("model_sha256", "?")
    size = meta["image_size"]
    return [
        ("architecture", f"{meta['arch']}, {meta['variant']} variant"),
        ("weights", weights),
        ("file", f"{Path(export['output']).name} ({export['file_bytes'] / 1e6:.1f} MB)"),
        ("file sha256", sha256),
        ("precision", f"{meta['precision']}, opset {meta['opset']}, {meta['exporter']} exporter"),
        ("input", f"{meta['layout']} {meta['dtype']}, batch {meta['batch']}, {size}x{size}"),
        ("parameters", f"{export['parameters']:,}"),
    ]


def machine_facts(record: dict[str, Any]) -> list[tuple[str, str]]:
    bench = record.get("bench") or {}
    env = record.get("environment") or bench.get("environment") or {}
    packages = env.get("packages") or {}
    return [
        (
            "CPU",
            f"{env.get('cpu_model', '?')}, {env.get('physical_cores', '?')} physical cores, "
            f"{env.get('logical_cpus', '?')} logical CPUs",
        ),
        ("GPU", "; ".join(env.get("gpus") or ["none"])),
        ("provider", record["verify"]["provider"]),
        ("platform", f"{env.get('platform', '?')}, Python {env.get('python', '?')}"),
        ("versions", ", ".join(f"{name} {version}" for name, version in packages.items())),
    ]


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The verdict, the speed-up and what to deploy, in a few sentences at the top."""
    verify = record["verify"]
    summary = verify_summary(verify)
    if not verify["passed"]:
        return {"verified": False, "summary": summary, "first": first_divergence(verify)}
    bench = record.get("bench") or {}
    done = [b for b in bench.get("batches", []) if b.get("error") is None]
    with_eager = [b for b in done if number(b.get("speedup_vs_torch")) is not None]
    speedup = None
    if with_eager:
        top = with_eager[-1]
        speedup = {
            "times": f"{number(top['speedup_vs_torch']):.2f}x",
            "batch": top["batch_size"],
            "onnx": format_cell(number(top["images_per_s"])),
            "eager": format_cell(number(top["torch_images_per_s"])),
            "others": ", ".join(
                f"batch {b['batch_size']}: {number(b['speedup_vs_torch']):.2f}x"
                for b in with_eager[:-1]
            ),
        }
    return {
        "verified": True,
        "state": "pass" if passed(record) else "fail",  # verified, but int8 refused by its guard
        "summary": summary,
        "speedup": speedup,
        "warn": any(b.get("warnings") for b in done) or bool(bench.get("warnings")),
        "deploy": recommendation(record),
    }


def recommendation(record: dict[str, Any]) -> dict[str, Any]:
    """Which file to deploy, and why: ``reason`` names a sentence in the header template."""
    optimize = record.get("optimize")
    fp32 = Path(record["export"]["output"]).name
    if not optimize:
        return {"file": fp32, "reason": "no-int8"}
    if optimize.get("output") is None:
        return {"file": fp32, "reason": "refused"}
    gains = int8_gains(record)
    if gains and gains[-1][1] > 1:
        batch, gain = gains[-1]
        name = Path(optimize["output"]).name
        return {"file": name, "reason": "faster", "gain": f"{gain:.2f}x", "batch": batch}
    return {"file": fp32, "reason": "slower"}


def int8_gains(record: dict[str, Any]) -> list[tuple[int, float]]:
    """(batch size, int8 images/s over fp32 images/s) where both ran."""
    fp32 = {b["batch_size"]: number(b.get("images_per_s")) for b in record["bench"]["batches"]}
    gains = []
    for b in (record.get("int8_bench") or {}).get("batches", []):
        int8, base = number(b.get("images_per_s")), fp32.get(b["batch_size"])
        if int8 and base:
            gains.append((b["batch_size"], int8 / base))
    return gains

"""The documentation stays true: its Python examples run, the option tables name real fields,
every command line uses real options, links resolve, and every page is in the site's nav."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

from resnet_deploy.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
PROSE = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "benchmarks" / "README.md", *PAGES]
EXAMPLES = [ROOT / "README.md", DOCS / "library.md"]  # Python blocks that must run as written
OPTION_CLASSES = {
    "ExportOptions": "resnet_deploy.convert.export",
    "VerifyOptions": "resnet_deploy.check.verify",
    "BenchOptions": "resnet_deploy.perf.bench",
    "OptimizeOptions": "resnet_deploy.convert.quantize",
}


def fenced(path: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)


@pytest.mark.slow
@pytest.mark.parametrize("page", EXAMPLES, ids=lambda p: p.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = fenced(page, "python")
    assert blocks, f"{page.name} has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, f"{page.name} example", "exec"), {"__name__": "__docs__"})


def test_option_tables_name_every_field() -> None:
    """library.md's table lists each options dataclass's fields, no more and no fewer."""
    table = (DOCS / "library.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+Options)` \| (.*) \|$", table, re.M))
    assert set(rows) == set(OPTION_CLASSES)
    for name, module in OPTION_CLASSES.items():
        cls = getattr(importlib.import_module(module), name)
        documented = re.findall(r"`(\w+)`", rows[name])
        assert sorted(documented) == sorted(f.name for f in dataclasses.fields(cls)), name


def command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for path in PROSE:
        for block in fenced(path, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words[:1] == ["resnet-deploy"]:
                    found.append((f"{path.relative_to(ROOT)}: {line.strip()}", words[1:]))
    return found


def test_command_lines_use_real_commands_and_options() -> None:
    lines = command_lines()
    assert len(lines) > 40
    ctx = click.Context(main)
    for where, words in lines:
        command = main.get_command(ctx, words[0]) if words else None
        assert command is not None, f"unknown command in {where}"
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        used = {word.partition("=")[0] for word in words[1:] if word.startswith("-")}
        assert used <= known, f"{where}: unknown {sorted(used - known)}"


def test_relative_links_resolve() -> None:
    for path in PROSE:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.relative_to(ROOT)}: {target}"


def test_no_paths_of_our_machines() -> None:
    """Docs name paths every user has, not the ones this project was developed on."""
    machine_path = re.compile(r"(?<![\w.])/(?:work|root|home)/|/tmp/(?!resnet-deploy-)")
    for path in [*PROSE, ROOT / "mkdocs.yml"]:
        found = machine_path.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.relative_to(ROOT)}: {found and found.group()}"


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(entries: list) -> list[str]:
        out = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            out += pages(value) if isinstance(value, list) else [value]
        return out

    assert config["docs_dir"] == "docs" and config["strict"] is True
    assert sorted(pages(config["nav"])) == sorted(str(p.relative_to(DOCS)) for p in PAGES)


def test_readme_quickstart_is_two_commands() -> None:
    """The README opens with exactly the install-and-run command and the test command."""
    blocks = fenced(ROOT / "README.md", "bash")
    assert blocks[0].strip().endswith("pip install -e '.[dev]' && resnet-deploy run")
    assert blocks[1].strip() == ". .venv/bin/activate && python -m pytest"

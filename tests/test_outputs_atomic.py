"""Folders a command writes are committed whole, and without --force only onto nothing: of two
writers racing onto one folder exactly one wins, the other is refused in one line, and the
folder is never a mix of the two."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_triton import snapshot, tiny_model  # tests/ is on sys.path under pytest's default mode

import resnet_deploy.files as files
import resnet_deploy.serving.repository as repository
from resnet_deploy.errors import OutputError, ResnetDeployError
from resnet_deploy.files import staged_folder
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.serving.repository import TritonOptions, write_model_repository

ROUNDS = 25
WAIT_S = 30.0  # the barrier's bound: a writer that never arrives fails the test, not hangs it


def race(writers: list[Callable[[], object]]) -> list[object]:
    """Run the writers in threads at once; each one's result or the exception it raised."""
    outcomes: list[object] = [None] * len(writers)

    def run(index: int) -> None:
        try:
            outcomes[index] = writers[index]()
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "a writer did not finish"
    return outcomes


def assert_one_won(outcomes: list[object]) -> int:
    """Exactly one writer succeeded; every other was refused in one line. The winner's index."""
    refused = [o for o in outcomes if isinstance(o, ResnetDeployError)]
    assert len(refused) == len(outcomes) - 1, outcomes
    for error in refused:
        assert isinstance(error, OutputError), error
        assert "\n" not in str(error) and "--force" in str(error), error
    return next(i for i, o in enumerate(outcomes) if not isinstance(o, BaseException))


def folder_writer(target: Path, tag: str, barrier: threading.Barrier) -> Callable[[], str]:
    """Fill a staged folder with files naming ``tag``, then wait for the other writer, so both
    commit at the same moment (the race the checks before the work cannot see)."""

    def write() -> str:
        with staged_folder(target) as staging:
            for name in ("a.txt", "b.txt", "sub/c.txt"):
                (staging / name).parent.mkdir(exist_ok=True)
                (staging / name).write_text(tag)
            barrier.wait(WAIT_S)
        return tag

    return write


@pytest.fixture(params=["renameat2", "rename"])
def commit_by(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of committing: renameat2(RENAME_NOREPLACE), and plain rename(2) where the
    system has no such call."""
    if request.param == "renameat2":
        if files._renameat2() is None:
            pytest.skip("this system has no renameat2")
    else:
        monkeypatch.setattr(files, "_renameat2", lambda: None)
    return request.param


def test_two_writers_racing_onto_one_folder_one_wins_whole(tmp_path: Path, commit_by: str) -> None:
    for round_ in range(ROUNDS):
        target = tmp_path / f"out{round_}"
        if round_ % 2:
            target.mkdir()  # an empty folder is "nothing there" too
        barrier = threading.Barrier(2)
        outcomes = race([folder_writer(target, tag, barrier) for tag in ("first", "second")])
        winner = ("first", "second")[assert_one_won(outcomes)]
        found = {str(p.relative_to(target)): p.read_text() for p in target.rglob("*.txt")}
        assert found == dict.fromkeys(("a.txt", "b.txt", "sub/c.txt"), winner)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"out{i}" for i in range(ROUNDS)), (
        "a temporary folder was left behind"
    )


def test_a_folder_with_files_is_never_replaced_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(OutputError, match="another command"), staged_folder(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["mine.txt"]


def test_force_replaces_whole_and_a_failure_keeps_the_old_folder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_folder(target, replace=True) as staging:
        (staging / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with staged_folder(target, replace=True) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


@contextmanager
def committing_together(barrier: threading.Barrier, **kwargs: object) -> Iterator[Path]:
    """``staged_folder`` that waits for the other writer before committing."""
    with staged_folder(**kwargs) as staging:
        yield staging
        barrier.wait(WAIT_S)


def test_two_triton_writers_of_one_model_one_wins_with_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = read_model(tiny_model(tmp_path / "tiny.onnx"))
    for round_ in range(5):
        repo = tmp_path / f"repo{round_}"
        barrier = threading.Barrier(2)

        def staged(target: Path, barrier: threading.Barrier = barrier, **kw: bool) -> object:
            return committing_together(barrier, target=target, **kw)

        def writer(delay: int, repo: Path = repo) -> Callable[[], object]:
            options = TritonOptions(repo=repo, name="m", max_queue_delay_us=delay)
            return lambda: write_model_repository(model, options)

        monkeypatch.setattr(repository, "staged_folder", staged)
        outcomes = race([writer(100), writer(200)])
        winner = outcomes[assert_one_won(outcomes)]
        assert (repo / "m" / "config.pbtxt").read_text() == winner.config_text
        assert (repo / "m" / "1" / "model.onnx").read_bytes() == model.proto.SerializeToString()
        assert not [p for p in snapshot(repo) if p.startswith(".") or "/." in p]


def test_two_triton_commands_at_once_one_exits_0_the_other_refused(tmp_path: Path) -> None:
    """The issue's case end to end: two `triton --repo R` processes started together."""
    model = tiny_model(tmp_path / "tiny.onnx")
    code = "from resnet_deploy.cli import main; main(prog_name='resnet-deploy')"
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                "triton",
                str(model),
                "--repo",
                str(tmp_path / "repo"),
                "--name",
                "m",
                "--max-queue-delay-us",
                str(delay),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for delay in (100, 200)
    ]
    results = [(run.wait(timeout=120), *run.communicate(timeout=10)) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert refused.count("\n") == 1 and refused.startswith("Error: "), refused
    config = (tmp_path / "repo" / "m" / "config.pbtxt").read_text()
    winner = 100 if results[0][0] == 0 else 200
    assert f"max_queue_delay_microseconds: {winner}" in config

"""The system under test, the one piece that differs between an in-process and a served model.

LoadGen calls ``issue_queries`` with samples and waits for each to be answered with
``QuerySamplesComplete``; what answers is pluggable:

- ``InProcess``: our ONNX Runtime sessions (one or more instances) behind one queue, each
  served by its own worker thread, which runs up to a maximum batch and waits at most a batch
  timeout (from the oldest sample's arrival) for a batch to fill. That is what lets Server meet
  its p99 bound under Poisson arrivals: a lone sample is not held back, a burst is served as one
  batch; and an idle instance takes the next batch while the others run, as a Triton model's
  instances share its dynamic batcher.
- ``Remote``: a served model (Triton, KServe v2), each query's samples sent as requests of up
  to a maximum batch by a fixed number of client threads, so that many are in flight and the
  server's own dynamic batcher forms the batches.

Both answer with the top-1 class of each sample, which LoadGen's accuracy log records.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from resnet_deploy.perf.loadgen.samples import SampleLibrary
from resnet_deploy.perf.timing import summarize, time_parallel
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.serving.client import EndpointModel, ModelClient, time_requests


class Sut:
    """What every system under test shares: answering LoadGen and counting what ran."""

    def __init__(self, lg: Any, library: SampleLibrary):
        self.lg = lg
        self.library = library
        self.lock = threading.Lock()
        self.batches = 0
        self.samples = 0
        self.padded = 0
        self.shapes: set[int] = set()  # batch sizes the engine ran
        self.predictions: dict[int, int] = {}
        self.error: str | None = None

    def flush_queries(self) -> None:
        """Nothing to do: no sample waits for more to arrive beyond its batch timeout."""

    def _infer(self, batch: list[Any], infer: Any, pad_to: int | None = None) -> None:
        """Run ``batch`` through ``infer`` (a batch array in, logits out) and answer LoadGen."""
        indices = [sample.index for sample in batch]
        try:
            array = self.library.batch(indices)
            if pad_to is not None and len(array) < pad_to:
                pad = np.repeat(array[-1:], pad_to - len(array), axis=0)
                array = np.concatenate([array, pad])
            logits = infer(array)
            top1 = np.ascontiguousarray(logits[: len(batch)].argmax(axis=1), dtype=np.int32)
        except Exception as exc:  # LoadGen waits forever for unanswered samples: answer them
            with self.lock:
                self.error = self.error or f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in batch])
            return
        pointer = top1.ctypes.data
        responses = [
            self.lg.QuerySampleResponse(sample.id, pointer + 4 * i, 4)
            for i, sample in enumerate(batch)
        ]
        with self.lock:
            self.predictions.update(zip(indices, top1.tolist(), strict=True))
            self.batches += 1
            self.samples += len(batch)
            self.padded += len(array) > len(batch)
            self.shapes.add(len(array))
        self.lg.QuerySamplesComplete(responses)  # copies the data while top1 is alive


class BatchingSut(Sut):
    """The in-process SUT: samples queue up; a worker per runner takes up to ``max_batch`` of
    them at once, waiting at most ``timeout_s`` after the oldest one arrived for more to join
    it, and pads a short batch to ``pad_to`` (the shape that was warmed up) when given."""

    def __init__(
        self,
        lg: Any,
        library: SampleLibrary,
        runners: list[OrtRunner],
        *,
        max_batch: int,
        timeout_s: float,
        pad_to: int | None,
    ):
        super().__init__(lg, library)
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.pad_to = pad_to
        self.pending: deque[tuple[Any, float]] = deque()
        self.ready = threading.Condition()
        self.closed = False
        self.workers = [
            threading.Thread(
                target=self._serve, args=(runner,), name=f"sut-worker-{i}", daemon=True
            )
            for i, runner in enumerate(runners)
        ]

    def issue_queries(self, samples: list[Any]) -> None:
        arrived = time.monotonic()
        with self.ready:  # a query's samples arrive together, so MultiStream's 8 stay one batch
            self.pending.extend((sample, arrived) for sample in samples)
            self.ready.notify()

    @contextmanager
    def serving(self) -> Iterator[BatchingSut]:
        for worker in self.workers:
            worker.start()
        try:
            yield self
        finally:
            with self.ready:
                self.closed = True
                self.ready.notify_all()
            for worker in self.workers:
                worker.join()

    def _serve(self, runner: OrtRunner) -> None:
        while True:
            with self.ready:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if not self.pending:
                    return
                # another worker may take the oldest samples meanwhile: the deadline is re-read
                while self.pending and len(self.pending) < self.max_batch and not self.closed:
                    remaining = self.pending[0][1] + self.timeout_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self.ready.wait(remaining)
                taken = min(self.max_batch, len(self.pending))
                batch = [self.pending.popleft()[0] for _ in range(taken)]
                if self.pending:  # more than one batch waits: wake an idle worker for the rest
                    self.ready.notify()
            if batch:
                self._infer(batch, lambda array: _ort_logits(runner, array), self.pad_to)


class RemoteSut(Sut):
    """The served model's SUT: ``concurrency`` threads, each with its own client, send the
    queued requests (a query's samples in requests of up to ``max_batch``); each request is
    limited by the client's timeout, so the run cannot hang on a lost answer."""

    def __init__(
        self,
        lg: Any,
        library: SampleLibrary,
        model: EndpointModel,
        *,
        max_batch: int,
        concurrency: int,
        timeout_s: float,
        pad_to: int | None,
    ):
        super().__init__(lg, library)
        self.model = model
        self.max_batch = max_batch
        self.pad_to = pad_to
        self.timeout_s = timeout_s
        self.work: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self.workers = [
            threading.Thread(target=self._serve, name=f"sut-client-{i}", daemon=True)
            for i in range(concurrency)
        ]

    def issue_queries(self, samples: list[Any]) -> None:
        for start in range(0, len(samples), self.max_batch):
            self.work.put(samples[start : start + self.max_batch])

    @contextmanager
    def serving(self) -> Iterator[RemoteSut]:
        for worker in self.workers:
            worker.start()
        try:
            yield self
        finally:
            for _ in self.workers:
                self.work.put(None)
            for worker in self.workers:
                worker.join()

    def _serve(self) -> None:
        with ModelClient(self.model, self.timeout_s) as client:
            while (batch := self.work.get()) is not None:
                self._infer(batch, lambda array: client.infer(client.place(array)), self.pad_to)


class InProcess:
    """ONNX Runtime sessions in this process, one per instance: the default system under test."""

    def __init__(self, runners: list[OrtRunner]):
        self.runners = runners

    def time(self, array: np.ndarray, seconds: float, *, alone: bool) -> dict[str, float]:
        """A run of the shape on each instance (a shape's first run tunes kernels), then timed
        runs: of one instance when ``alone``, else of every instance at once, each in its own
        thread (the throughput they reach together)."""
        runners = self.runners[:1] if alone else self.runners
        times, wall, _ = time_parallel(runners, array, seconds=seconds)
        return summarize(times, wall, len(array))

    def warm(self, array: np.ndarray) -> None:
        for runner in self.runners:
            _ort_logits(runner, array)

    def sut(
        self,
        lg: Any,
        library: SampleLibrary,
        *,
        max_batch: int,
        timeout_s: float,
        pad_to: int | None,
    ) -> BatchingSut:
        return BatchingSut(
            lg, library, self.runners, max_batch=max_batch, timeout_s=timeout_s, pad_to=pad_to
        )

    def close(self) -> None:
        for runner in self.runners:
            runner.__exit__()


class Remote:
    """A served model, reached through tritonclient."""

    def __init__(self, model: EndpointModel, *, concurrency: int, timeout_s: float):
        self.model = model
        self.concurrency = concurrency
        self.timeout_s = timeout_s

    def time(self, array: np.ndarray, seconds: float, *, alone: bool) -> dict[str, float]:
        """Requests of ``array`` for ``seconds``: one at a time when ``alone``, else as many in
        flight as the SUT will keep (the throughput the server's batching reaches)."""
        self.warm(array)
        concurrency = 1 if alone else self.concurrency
        timed = time_requests(
            self.model, array, concurrency=concurrency, timeout_s=self.timeout_s, seconds=seconds
        )
        return summarize(*timed, len(array))

    def warm(self, array: np.ndarray) -> None:
        with ModelClient(self.model, self.timeout_s) as client:
            client.infer(client.place(array))

    def sut(
        self,
        lg: Any,
        library: SampleLibrary,
        *,
        max_batch: int,
        timeout_s: float,
        pad_to: int | None,
    ) -> RemoteSut:
        return RemoteSut(
            lg,
            library,
            self.model,
            max_batch=max_batch,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            pad_to=pad_to,
        )

    def close(self) -> None:
        """Nothing held: each client closes with the thread that used it."""


def _ort_logits(runner: OrtRunner, array: np.ndarray) -> np.ndarray:
    logits = runner.infer(runner.place(array))[0]
    return logits if isinstance(logits, np.ndarray) else logits.numpy()

"""MLPerf LoadGen scenarios: LoadGen drives the load, a pluggable system under test answers it.

MLPerf Inference states ResNet50 deployment performance as LoadGen measures it: Poisson
arrivals in Server, one sample at a time in SingleStream, eight per query in MultiStream, one
huge query in Offline, and a VALID/INVALID verdict that includes an early-stopping test of
whether enough queries ran for the percentile to mean anything. So LoadGen itself issues every
query here; this package only supplies the two objects it asks for and reads its logs:

- a query sample library (QSL, ``samples``): preprocessed images from a folder, or generated
  inputs, held in memory between LoadGen's load and unload calls, so no file is read while the
  clock runs;
- a system under test (SUT, ``sut``): our ONNX Runtime session in this process behind a
  batching worker, or a served model (Triton, KServe v2) reached through tritonclient with
  many requests in flight. Everything else (``prepare``, ``driver``, ``results``) is shared by
  both.

The verdict, throughput, percentiles and LoadGen's errors come from its structured
``mlperf_log_detail.txt`` (``logs``); top-1 accuracy from its ``mlperf_log_accuracy.json``,
cross-checked against the responses the SUT sent.
"""

from resnet_deploy.perf.loadgen.driver import run_scenario
from resnet_deploy.perf.loadgen.options import (
    SCENARIOS,
    PeakStep,
    ScenarioOptions,
    ScenarioResult,
    check_scenario_options,
)
from resnet_deploy.perf.loadgen.results import format_result
from resnet_deploy.perf.loadgen.samples import SampleLibrary, read_labels

__all__ = [
    "SCENARIOS",
    "PeakStep",
    "SampleLibrary",
    "ScenarioOptions",
    "ScenarioResult",
    "check_scenario_options",
    "format_result",
    "read_labels",
    "run_scenario",
]

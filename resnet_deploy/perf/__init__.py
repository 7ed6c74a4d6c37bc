"""Speed: the timing loop, ``bench`` (local and remote), CPU contention, per-node profiles,
``tune`` and MLPerf LoadGen scenarios.

May import: model, data, runtime, serving (client and repository), report, errors, files,
environment.
"""

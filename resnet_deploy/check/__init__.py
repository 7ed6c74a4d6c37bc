"""Numerics: comparing an ONNX file with the eager model, the tolerance policy, and localizing the
first layer that drifts.

May import: model, data, runtime, report, errors, files.
"""

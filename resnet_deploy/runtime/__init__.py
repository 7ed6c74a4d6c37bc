"""Running ONNX files: provider names, the one place that creates ONNX Runtime sessions, where
nodes were placed, int8 targets, runners for timing loops, OpenVINO, and memory checks.

May import: model (metadata, labels, file reading), report, errors, files, environment. Never torch.
"""

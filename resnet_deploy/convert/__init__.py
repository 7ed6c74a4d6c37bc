"""Making ONNX files: export from PyTorch, exact fp32 rewrites, and int8/fp16 quantization.

May import: model, data, runtime, check, report, errors, files.
"""

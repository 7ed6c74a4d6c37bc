"""The model and what describes it: the ResNet definitions, their weights, the metadata an ONNX
file carries, the ImageNet labels, and reading a model file once.

May import: errors, files. Only ``resnet`` and ``weights`` import torch; the rest stays free of it,
so the runtime and serving packages can read metadata and labels without torch.
"""

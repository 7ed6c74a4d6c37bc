"""The model and what describes it: the ResNet definitions, their weights, the metadata an ONNX
file carries, the ImageNet labels, reading a model file once, and running it in PyTorch eager.

May import: errors, files. Only ``resnet``, ``weights`` and ``eager`` import torch; the rest stays
free of it, so the runtime and serving packages can read metadata and labels without torch.
"""

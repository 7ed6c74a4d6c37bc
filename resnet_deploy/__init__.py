"""resnet-deploy: PyTorch ResNet to production through ONNX, verified and benchmarked."""

__version__ = "0.1.0"

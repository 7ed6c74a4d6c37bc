"""Provider names and session constants, importable without loading ONNX Runtime.

The CLI builds its choices from these, so ``--help`` stays fast, and modules that only need a
name (int8 targets, placement, Triton configs) do not pull in the runtime or each other.
"""

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
SHORT_NAMES = {
    "cpu": CPU,
    "cuda": CUDA,
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
}
CUDNN_ALGOS = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # cudnn_conv_algo_search values
SPINNING = "session.intra_op.allow_spinning"  # "1": idle threads spin (low latency, busy CPU)

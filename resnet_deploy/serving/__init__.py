"""Serving: Triton model repositories, ``serve`` (tritonserver with our Python backend), the
backend that runs inside Triton's stub, and the client that talks to any KServe v2 endpoint.

May import: model (not its torch modules), data, runtime, report, errors, files. The backend and
the client never import torch.
"""

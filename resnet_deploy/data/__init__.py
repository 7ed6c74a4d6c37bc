"""Images in, tensors out: decoding and preprocessing, shared by verify, optimize, predict, LoadGen
and the serving backend, so every path feeds the model the same numbers.

May import: errors, files, model (metadata and labels only). Never torch.
"""

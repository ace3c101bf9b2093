"""rkd-edge: robust knowledge distillation for semantic communication, from search to the edge.

Importing this package is cheap and never imports torch: the deployable runtime
(:mod:`rkd_edge.runtime`) depends on numpy and ONNX Runtime only.
"""

__version__ = "0.1.0"

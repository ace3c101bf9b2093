"""The deployable runtime: load a bundle and run encoder -> tx and rx -> classifier with numpy and one
of the back ends in :mod:`rkd_edge.runtime.runners` (ONNX Runtime CPU / CUDA / TensorRT providers,
TensorRT engines, the PyTorch reference). Importing this package never imports torch.

Example::

    from rkd_edge.runtime import Runtime
    rt = Runtime("bundle/")                       # verifies every file against manifest.json
    feats = rt.encode(images_uint8)               # [B, H, W, C] uint8 -> [B, D] float32
    symbols, mask = rt.transmit(feats, snr_db=10.0, k=8)
    logits = rt.receive(received, mask, snr_db=10.0)
    rt.providers                                  # what really runs it, e.g. ['CPUExecutionProvider']
    Runtime("bundle/", backend="tensorrt")        # the engines built by rkd-edge export trt
"""

from rkd_edge.runtime.bundle import Bundle, BundleError, load_manifest, verify_bundle
from rkd_edge.runtime.session import Runtime

__all__ = ["Bundle", "BundleError", "Runtime", "load_manifest", "verify_bundle"]

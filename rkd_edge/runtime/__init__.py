"""The deployable runtime: load a bundle and run encoder -> tx and rx -> classifier with ONNX Runtime
(TensorRT engines where present) and numpy only. Importing this package never imports torch.

Example::

    from rkd_edge.runtime import Runtime
    rt = Runtime("bundle/")                       # verifies every file against manifest.json
    feats = rt.encode(images_uint8)               # [B, H, W, C] uint8 -> [B, D] float32
    symbols, mask = rt.transmit(feats, snr_db=10.0, k=8)
    logits = rt.receive(received, mask, snr_db=10.0)
"""

from rkd_edge.runtime.bundle import Bundle, BundleError, load_manifest, verify_bundle
from rkd_edge.runtime.session import Runtime

__all__ = ["Bundle", "BundleError", "Runtime", "load_manifest", "verify_bundle"]

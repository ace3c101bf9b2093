"""Student encoders behind one factory, :func:`create_encoder`."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from rkd_edge.errors import UserError
from rkd_edge.nas.genotypes import Genotype
from rkd_edge.students.handcrafted import ResNetLikeEncoder
from rkd_edge.students.network import StudentEncoder


def create_encoder(
    spec: str | Genotype | Path, input_shape: tuple[int, int, int] | None = None, feature_dim: int = 64
) -> nn.Module:
    """Build a student encoder.

    Args:
        spec: A :class:`Genotype`, a path to ``genotype.json``, or ``resnet-like`` (hand-designed baseline).
        input_shape: ``(C, H, W)``, needed by hand-designed encoders.
        feature_dim: Feature width of hand-designed encoders.
    """
    if isinstance(spec, Genotype):
        return StudentEncoder(spec)
    if str(spec) == "resnet-like":
        if input_shape is None:
            raise UserError("resnet-like encoder needs the input shape")
        return ResNetLikeEncoder(input_shape[0], input_shape[1], feature_dim)
    path = Path(spec)
    if path.is_dir():
        path = path / "genotype.json"
    if path.suffix == ".json" or path.exists():
        return StudentEncoder(Genotype.load(path))
    raise UserError(f"unknown encoder {spec!r}; give a genotype.json or 'resnet-like'")

"""Teachers (large models) behind one factory, :func:`create_teacher`, named by a spec string.

Specs:
    ``cnn-large``, ``cnn-base``, ``vit-small``, ``vit-tiny``: a family the toolkit trains itself.
    ``timm:NAME``: a timm model with pretrained weights from the local cache;
    ``timm:NAME@FILE``: weights from a local file; ``timm:NAME@random``: random weights (smoke tests).
    ``local:DIR``: a checkpoint written by ``rkd-edge teacher train --out DIR``.

Every teacher maps ``x: [B, C, H, W] float32`` (normalised) to ``(embedding [B, E], logits [B, N])``.
"""

from rkd_edge.teachers.base import Teacher
from rkd_edge.teachers.registry import TEACHER_FAMILIES, create_teacher, teacher_specs

__all__ = ["TEACHER_FAMILIES", "Teacher", "create_teacher", "teacher_specs"]

"""The teacher registry and :func:`create_teacher`."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from rkd_edge.errors import UserError
from rkd_edge.io import read_json, sha256_file
from rkd_edge.teachers.base import Teacher
from rkd_edge.teachers.families import FAMILIES, build_family

TEACHER_FAMILIES = tuple(FAMILIES)


def teacher_specs() -> list[str]:
    """Spec forms accepted by :func:`create_teacher`."""
    return [*TEACHER_FAMILIES, "timm:NAME[@FILE|@random]", "local:DIR"]


def create_teacher(spec: str, input_shape: tuple[int, int, int], num_classes: int) -> Teacher:
    """Build a teacher from its spec.

    Args:
        spec: See :mod:`rkd_edge.teachers`.
        input_shape: ``(C, H, W)`` of the normalised images it will see.
        num_classes: Classes of the task.
    """
    kind, _, arg = spec.partition(":")
    c, h, _ = input_shape
    if spec in FAMILIES:
        return build_family(spec, c, h, num_classes)
    if kind == "timm" and arg:
        from rkd_edge.teachers.timm_teacher import TimmTeacher

        name, _, weights = arg.partition("@")
        return TimmTeacher(name, weights or None, c, h, num_classes)
    if kind == "local" and arg:
        return load_local(arg, input_shape, num_classes)
    raise UserError(f"unknown teacher spec {spec!r}; use one of {', '.join(teacher_specs())}")


def load_local(folder: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> Teacher:
    """Load a teacher written by ``rkd-edge teacher train --out DIR``."""
    root = Path(folder)
    meta = read_json(root / "teacher.json", "teacher record")
    weights = root / "teacher.pt"
    if not weights.is_file():
        raise UserError(f"teacher checkpoint missing: {weights}; train it with rkd-edge teacher train")
    shape = tuple(meta.get("input_shape", ()))
    if input_shape is not None and shape != tuple(input_shape):
        raise UserError(
            f"teacher in {folder} expects input {list(shape)}, the data give "
            f"{list(input_shape)}; match --image-size/--channels or retrain the teacher"
        )
    if num_classes is not None and meta.get("num_classes") != num_classes:
        raise UserError(
            f"teacher in {folder} has {meta.get('num_classes')} classes, the data have "
            f"{num_classes}; use a teacher trained on this dataset"
        )
    arch = meta["arch"]
    teacher = create_teacher(
        arch + "@random" if arch.startswith("timm:") and "@" not in arch else arch, shape, meta["num_classes"]
    )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        teacher.load_state_dict(state)
    except (RuntimeError, OSError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise UserError(
            f"teacher checkpoint {weights} is unreadable or does not match {arch} "
            f"({str(exc).splitlines()[0][:120]}); retrain it"
        ) from None
    teacher.spec = f"local:{Path(folder).as_posix()}"
    digest = sha256_file(weights)[:16]
    teacher.identity = lambda: f"local#{arch}#{digest}"  # type: ignore[method-assign]
    return teacher

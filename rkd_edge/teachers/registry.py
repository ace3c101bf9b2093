"""The teacher registry and :func:`create_teacher`."""

from __future__ import annotations

from pathlib import Path

from rkd_edge.checkpoints import read_plain
from rkd_edge.errors import UserError, first_sentence
from rkd_edge.io import read_json, sha256_file
from rkd_edge.teachers.base import Teacher
from rkd_edge.teachers.families import FAMILIES, build_family

TEACHER_FAMILIES = tuple(FAMILIES)


def teacher_specs() -> list[str]:
    """Spec forms accepted by :func:`create_teacher`."""
    return [*TEACHER_FAMILIES, "timm:NAME[@FILE|@random]", "local:DIR"]


def _timm_named(arg: str) -> bool:
    """Whether ``NAME[@FILE]`` (after ``timm:``) names a model, and a file when it has an ``@``."""
    name, at, weights = arg.partition("@")
    return bool(name) and (bool(weights) or not at)


def check_arch(arch: str) -> None:
    """Refuse a teacher architecture ``teacher train`` cannot build (one line, before any work)."""
    kind, _, arg = str(arch).partition(":")
    if arch in FAMILIES or (kind == "timm" and _timm_named(arg)):
        return
    raise UserError(f"unknown teacher arch {arch!r}; use one of {', '.join(TEACHER_FAMILIES)} or timm:NAME[@FILE]")


def create_teacher(spec: str, input_shape: tuple[int, int, int], num_classes: int) -> Teacher:
    """Build a teacher from its spec.

    Args:
        spec: See :mod:`rkd_edge.teachers`.
        input_shape: ``(C, H, W)`` of the normalised images it will see.
        num_classes: Classes of the task.
    """
    check_spec(spec)
    kind, _, arg = spec.partition(":")
    c, h, _ = input_shape
    if spec in FAMILIES:
        return build_family(spec, c, h, num_classes)
    if kind == "timm":
        from rkd_edge.teachers.timm_teacher import TimmTeacher

        name, _, weights = arg.partition("@")
        return TimmTeacher(name, weights or None, c, h, num_classes)
    return load_local(arg, input_shape, num_classes)


def check_spec(spec) -> None:
    """Refuse a teacher spec of no form :func:`create_teacher` knows (one line, before it builds anything)."""
    if isinstance(spec, str):
        kind, _, arg = spec.partition(":")
        if spec in FAMILIES or (kind == "local" and arg.strip()) or (kind == "timm" and _timm_named(arg)):
            return
    raise UserError(f"unknown teacher spec {spec!r}; use one of {', '.join(teacher_specs())}")


def load_local(folder: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None) -> Teacher:
    """Load a teacher written by ``rkd-edge teacher train --out DIR``."""
    root = Path(folder)
    if not (root / "teacher.json").is_file() and not root.is_absolute():
        raise UserError(
            f"teacher record not found: {root / 'teacher.json'}; a local: path is relative to the folder the "
            "command runs in (a run that names one resumes, prunes and evaluates from the folder it started in)"
        )
    meta = read_json(root / "teacher.json", "teacher record")
    weights = root / "teacher.pt"
    if weights.exists() and not weights.is_file():  # a FIFO would block the read, a device fill the memory
        raise UserError(f"teacher checkpoint {weights} is not a regular file (a folder, device or FIFO?); replace it")
    if not weights.is_file():
        raise UserError(f"teacher checkpoint missing: {weights}; train it with rkd-edge teacher train")
    _check_record(meta, root / "teacher.json")
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
        state = read_plain(weights)
        if not isinstance(state, dict):
            raise ValueError(f"it holds a {type(state).__name__}, not a state dict")
        teacher.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise UserError(
            f"teacher checkpoint {weights} is unreadable or does not match {arch} ({first_sentence(exc)}); retrain it"
        ) from None
    teacher.spec = f"local:{Path(folder).as_posix()}"
    digest = sha256_file(weights)[:16]
    teacher.identity = lambda: f"local#{arch}#{digest}"  # type: ignore[method-assign]
    return teacher


def _check_record(meta, path: Path) -> None:
    """``teacher.json`` must be the record ``teacher train`` wrote: arch, classes and input shape."""
    if not isinstance(meta, dict):
        raise UserError(f"{path} is not a teacher record (a {type(meta).__name__}); retrain the teacher")
    arch, n, shape = meta.get("arch"), meta.get("num_classes"), meta.get("input_shape")
    if not isinstance(arch, str) or not arch:
        raise UserError(f"{path} names no teacher arch ('arch': {arch!r}); retrain the teacher")
    check_arch(arch)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"{path}: num_classes is {n!r}, not a positive whole number; retrain the teacher")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise UserError(f"{path}: input_shape is {shape!r}, not [C, H, W]; retrain the teacher")

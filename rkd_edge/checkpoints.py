"""Checkpoint files: written atomically with equal bytes for equal weights, read as plain data only (a file
from someone else cannot run code), refused with one line when they are not checkpoints."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import torch

from rkd_edge.errors import UserError, first_sentence
from rkd_edge.io import atomic_path


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` atomically. Through a file handle: saved to a path, the archive's inner folder would be
    named after the random temporary file, so equal weights would not make equal bytes (nor equal hashes).
    Serialised in memory first: torch's writer turns a full disk into a RuntimeError ("unexpected pos"), a
    plain write raises the OSError (no space left) the CLI reports as one line."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())


def read_plain(path: Path) -> Any:
    """``torch.load`` limited to tensors, numbers, strings and containers (``weights_only=True``), so a file
    from someone else cannot run code.

    Raises:
        ValueError: the file is unreadable, not a torch file, or asks for anything else; the message is
            one sentence (arbitrary bytes make the unpickler fail with any exception type).
    """
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files: we refuse them
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - see Raises
        if not looks_like_weights(path):  # the unpickler's error on other bytes reads as a riddle ("101")
            raise ValueError("it is not a PyTorch file") from None
        raise ValueError(f"{type(exc).__name__}: {first_sentence(exc) or 'no detail'}") from None


def looks_like_weights(path: Path) -> bool:
    """Whether a file starts as weights do: a PyTorch zip, a bare pickle, or safetensors (a length, then ``{``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or head[8:9] == b"{"


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (:func:`read_plain`): a file that is not one is
    refused with one line."""
    try:
        state = read_plain(path)
    except ValueError as exc:
        raise UserError(
            f"checkpoint {path} is unreadable or not plain weights ({exc}); delete it to restart this stage"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"checkpoint {path} holds a {type(state).__name__}, not a checkpoint; delete it")
    return state

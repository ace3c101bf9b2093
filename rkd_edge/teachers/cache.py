"""Teacher-output cache: embeddings and logits per split, keyed by teacher, samples and transform.

Valid only for deterministic transforms (no augmentation): callers with augmentation run the teacher
online instead. Any change of teacher weights, samples or preprocessing changes the key: a miss.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rkd_edge import progress
from rkd_edge.checkpoints import read_plain, save_checkpoint
from rkd_edge.data import Split
from rkd_edge.env import eval_batch_size
from rkd_edge.io import json_digest
from rkd_edge.teachers.base import Teacher


class TeacherCache:
    """Compute-once store of ``(embedding [N, E], logits [N, C])`` for a teacher over a split.

    Args:
        root: Folder for cache files; ``None`` keeps results in memory only.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(teacher: Teacher, split: Split) -> str:
        """sha256 of the teacher identity, the split's sample fingerprint and its transform."""
        parts = {"teacher": teacher.identity(), "samples": split.fingerprint(), "transform": split.transform.to_dict()}
        return json_digest(parts)

    def outputs(
        self, teacher: Teacher, split: Split, device: str = "cpu", batch_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the teacher's outputs on every sample of ``split``, in split order (CPU tensors; callers
        that train on a GPU move them there once and index them there).

        ``batch_size`` defaults to :func:`rkd_edge.env.eval_batch_size` of ``device``."""
        key = self.key(teacher, split)
        if key in self._memo:
            self.hits += 1
            return self._memo[key]
        path = self.root / f"{key[:32]}.pt" if self.root is not None else None
        if path is not None and path.is_file():
            try:
                data = read_plain(path)
            except ValueError:
                data = None  # a damaged or foreign cache file is recomputed
            if isinstance(data, dict) and data.get("key") == key and _outputs(data, len(split)):
                self.hits += 1
                self._memo[key] = (data["embedding"], data["logits"])
                return self._memo[key]
        self.misses += 1
        out = run_teacher(teacher, split, device, batch_size)
        if path is not None:
            save_checkpoint(path, {"key": key, "embedding": out[0], "logits": out[1]})
        self._memo[key] = out
        return out


def _outputs(data: dict, n: int) -> bool:
    """Whether a cache file holds ``embedding [n, E]`` and ``logits [n, C]`` float tensors."""
    e, lg = data.get("embedding"), data.get("logits")
    return all(
        isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim() == 2 and len(t) == n for t in (e, lg)
    )


@torch.no_grad()
def run_teacher(
    teacher: Teacher, split: Split, device: str = "cpu", batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher outputs over a split: ``(embedding [N, E] float32, logits [N, C] float32)``, on the CPU.

    The batches are made on ``device`` and the outputs gathered there, copied to the host once.
    """
    teacher.freeze()
    batch_size = batch_size or eval_batch_size(device)
    embs, logits = [], []
    with progress.task(f"teacher outputs ({split.name})", (len(split) + batch_size - 1) // batch_size) as bar:
        for x, _, _ in split.on(device).batches(batch_size):
            e, lg = teacher(x.to(device))
            embs.append(e.float())
            logits.append(lg.float())
            bar.advance()
    return torch.cat(embs).cpu(), torch.cat(logits).cpu()

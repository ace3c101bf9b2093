"""Teachers: every family and spec form builds and runs; frozen while teaching; the output cache."""

import json

import pytest
import torch

from rkd_edge.errors import UserError
from rkd_edge.teachers import TEACHER_FAMILIES, create_teacher
from rkd_edge.teachers.cache import TeacherCache

SPECS = [*TEACHER_FAMILIES, "timm:resnet10t@random", "timm:vit_tiny_patch16_224@random"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_teacher_builds_and_runs(spec, shape):
    if spec.startswith("timm:vit") and shape[1] < 16:
        with pytest.raises(UserError, match="patches"):
            create_teacher(spec, shape, 7)
        shape = (shape[0], 32, 32)
    t = create_teacher(spec, shape, 7).freeze()
    emb, logits = t(torch.randn(2, *shape))
    assert emb.shape == (2, t.embed_dim) and logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    assert not any(p.requires_grad for p in t.parameters())
    t.train()  # a frozen teacher stays in eval mode inside a training parent
    assert not t.training


def test_local_teacher_round_trip(tiny_teacher_dir, digits):
    meta = json.loads((tiny_teacher_dir / "teacher.json").read_text())
    assert {"spec", "params", "accuracy"} <= set(meta) and 0 <= meta["accuracy"] <= 1
    t = create_teacher(f"local:{tiny_teacher_dir}", digits.input_shape, 10)
    assert sum(p.numel() for p in t.parameters()) == meta["params"]
    from rkd_edge.teachers.base import accuracy

    assert abs(accuracy(t.freeze(), digits.test) - meta["accuracy"]) < 1e-9


def test_local_teacher_mismatch_and_missing(tiny_teacher_dir, tmp_path):
    with pytest.raises(UserError, match="classes"):
        create_teacher(f"local:{tiny_teacher_dir}", (1, 8, 8), 5)
    with pytest.raises(UserError, match="expects input"):
        create_teacher(f"local:{tiny_teacher_dir}", (3, 8, 8), 10)
    with pytest.raises(UserError, match="not found"):
        create_teacher(f"local:{tmp_path}", (1, 8, 8), 10)
    (tmp_path / "teacher.json").write_text((tiny_teacher_dir / "teacher.json").read_text())
    (tmp_path / "teacher.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="unreadable"):
        create_teacher(f"local:{tmp_path}", (1, 8, 8), 10)


def test_timm_pretrained_missing_offline(tmp_path, monkeypatch, capfd):
    # pretrained weights come from the local cache only unless RKD_EDGE_DOWNLOAD=1: no hub retries, one line
    monkeypatch.delenv("RKD_EDGE_DOWNLOAD", raising=False)
    with pytest.raises(UserError, match="not in the local cache.*RKD_EDGE_DOWNLOAD=1"):
        create_teacher("timm:resnet10t", (3, 32, 32), 10)
    assert "Retry" not in capfd.readouterr().err
    with pytest.raises(UserError, match="not in the local cache|weights file not found"):
        create_teacher(f"timm:resnet10t@{tmp_path}/nope.safetensors", (3, 32, 32), 10)
    with pytest.raises(UserError, match="unknown timm model"):
        create_teacher("timm:not_a_model@random", (3, 32, 32), 10)
    with pytest.raises(UserError, match="unknown teacher spec"):
        create_teacher("bert", (3, 32, 32), 10)


def test_cache_returns_teacher_outputs_and_misses_on_change(tmp_path, digits, tiny_teacher_dir):
    from rkd_edge.data import create_dataset
    from rkd_edge.teachers.cache import run_teacher

    t = create_teacher(f"local:{tiny_teacher_dir}", digits.input_shape, 10).freeze()
    cache = TeacherCache(tmp_path)
    emb, logits = cache.outputs(t, digits.val)
    ref_emb, ref_logits = run_teacher(t, digits.val)
    torch.testing.assert_close(emb, ref_emb)
    torch.testing.assert_close(logits, ref_logits)
    assert (cache.hits, cache.misses) == (0, 1)
    # a new cache object reads the file: hit
    again = TeacherCache(tmp_path)
    again.outputs(t, digits.val)
    assert (again.hits, again.misses) == (1, 0)
    # samples change (another seed's split) -> miss
    again.outputs(t, create_dataset("digits", seed=5).val)
    # transform changes (resize) -> miss
    resized = create_dataset("digits", image_size=10)
    t10 = create_teacher("cnn-base", resized.input_shape, 10).freeze()
    again.outputs(t10, resized.val)
    # teacher changes -> miss
    other = create_teacher("cnn-base", digits.input_shape, 10).freeze()
    again.outputs(other, digits.val)
    assert again.misses == 3


class _Payload:
    """Pickles to a call of ``os.system``: what a cache file from someone else could try."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("content", ["text", "pickle", "other-tensors", "wrong-rows"])
def test_cache_recomputes_a_damaged_or_foreign_file(tmp_path, digits, tiny_teacher_dir, content):
    """A cache file that is not this cache's (text, a pickle that would run code, other tensors) is
    recomputed and rewritten, never loaded or run (a hostile pass found text and pickles ended in tracebacks)."""
    t = create_teacher(f"local:{tiny_teacher_dir}", digits.input_shape, 10).freeze()
    ref = TeacherCache(tmp_path / "c").outputs(t, digits.val)
    (path,) = (tmp_path / "c").glob("*.pt")
    key = TeacherCache(tmp_path / "c").key(t, digits.val)
    marker = tmp_path / "PWNED"
    if content == "text":
        path.write_bytes(b"hello\n")
    elif content == "pickle":
        torch.save(_Payload(marker), path)
    elif content == "other-tensors":
        torch.save({"key": key, "embedding": "x", "logits": [1]}, path)
    else:
        torch.save({"key": key, "embedding": ref[0][:3], "logits": ref[1][:3]}, path)
    cache = TeacherCache(tmp_path / "c")
    emb, logits = cache.outputs(t, digits.val)
    assert not marker.exists()
    assert (cache.hits, cache.misses) == (0, 1)
    torch.testing.assert_close(emb, ref[0])
    torch.testing.assert_close(logits, ref[1])
    assert TeacherCache(tmp_path / "c").outputs(t, digits.val)[1].shape == ref[1].shape  # rewritten: a hit now

"""The system spec: what it takes to rebuild a run's system (``RUN/system.json``), written and checked here.

A run folder can come from someone else, or be edited by hand: every size in its spec is read strictly
(a whole number in range, a known name, a file inside the run) before anything is built from it, so a
``num_classes`` of 10**12 or a ``codec.heads`` of 0 is one line instead of a traceback or an allocation
that takes the machine down.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from rkd_edge.config import CODEC_NAMES
from rkd_edge.errors import UserError
from rkd_edge.limits import IMAGE_SIZE_RANGE, is_whole
from rkd_edge.methods import ENCODERS

if TYPE_CHECKING:
    from rkd_edge.config import RunConfig
    from rkd_edge.data import DataSplits

ENCODER_KINDS = ("genotype", "resnet-like")
# Whole-number fields: (lo, hi). The bounds are the config's for the same keys (rkd_edge.config.RANGES).
WHOLE = {
    "num_classes": (1, 1 << 20),
    "teacher_dim": (1, 1 << 16),
    "encoder.feature_dim": (1, 1 << 16),
    "codec.max_symbols": (1, 4096),
    "codec.dim": (1, 1 << 14),
    "codec.depth": (0, 64),
    "codec.heads": (1, 256),
    "codec.posterior_classes": (0, 1 << 20),
}
FLAGS = ("codec.csi", "codec.gains", "codec.rx_per_length")
INPUT_RANGES = ((1, 3), IMAGE_SIZE_RANGE, IMAGE_SIZE_RANGE)  # C, H, W: data.channels (1 or 3), data.image_size


def system_spec(cfg: RunConfig, splits: DataSplits, teacher_dim: int) -> dict:
    """What it takes to rebuild the system of a run (``RUN/system.json``)."""
    cc = cfg.codec
    encoder = (
        {"kind": ENCODERS[cfg.method], "feature_dim": cfg.search.feature_dim}
        if cfg.method in ENCODERS
        else {"kind": "genotype", "file": "genotype.json"}
    )
    codec = {
        "name": cc.name,
        "max_symbols": cc.max_symbols,
        "symbols": cc.symbols,
        "dim": cc.dim,
        "depth": cc.depth,
        "heads": cc.heads,
        "csi": cc.csi == "decoder",
    }
    if cc.gains:  # only when on: a system.json written before the option rebuilds as it was
        codec["gains"] = True
    if cc.posterior and cc.name == "cat":  # the other codecs have no linear path to feed
        codec["posterior_classes"] = splits.num_classes
    if cc.rx_per_length and cc.name == "cat":
        codec["rx_per_length"] = True
    return {
        "encoder": encoder,
        "codec": codec,
        "num_classes": splits.num_classes,
        "teacher_dim": teacher_dim,
        "input_shape": list(splits.input_shape),
    }


def check_spec(spec: dict, where: str) -> dict:
    """``spec`` if every field a system is built from is sound, else one line naming the field.

    Args:
        spec: A parsed ``system.json``.
        where: The file, for messages.

    Returns:
        ``spec`` unchanged.
    """

    def bad(field: str, want: str):
        return UserError(f"{where}: {field} must be {want}; rerun the pipeline into a new folder")

    for key in ("encoder", "codec", "num_classes", "teacher_dim", "input_shape"):
        if key not in spec:
            raise UserError(f"{where} lacks {key!r}; rerun the pipeline into a new folder")
    enc, codec = spec["encoder"], spec["codec"]
    if not isinstance(enc, dict) or enc.get("kind") not in ENCODER_KINDS:
        raise bad("encoder.kind", f"one of {', '.join(ENCODER_KINDS)}")
    if not isinstance(codec, dict) or codec.get("name") not in CODEC_NAMES:
        raise bad("codec.name", f"one of {', '.join(CODEC_NAMES)}")
    if enc["kind"] == "genotype":
        file = enc.get("file")
        # a plain name inside the run: a spec cannot point the loader at another folder's files
        if not isinstance(file, str) or not file or PurePosixPath(file).name != file or file in (".", ".."):
            raise bad("encoder.file", "the name of a file in the run folder, e.g. genotype.json")
    sections = {"encoder": enc, "codec": codec}
    for field, (lo, hi) in WHOLE.items():
        section, _, name = field.rpartition(".")
        holder = sections[section] if section else spec
        resnet = enc["kind"] == "resnet-like"
        optional = field == "codec.posterior_classes" or (field == "encoder.feature_dim" and not resnet)
        if optional and name not in holder:
            continue
        v = holder.get(name)
        if not is_whole(v) or not lo <= v <= hi:
            raise bad(field, f"a whole number from {lo} to {hi}, not {v!r}")
    for field in FLAGS:
        v = codec.get(field.split(".")[1], False)
        if not isinstance(v, bool):
            raise bad(field, f"true or false, not {v!r}")
    if codec["name"] == "cat":
        if codec["dim"] % codec["heads"]:
            raise bad("codec.dim", f"a multiple of codec.heads ({codec['heads']}), not {codec['dim']}")
        symbols = codec.get("symbols")
        k = codec["max_symbols"]
        if symbols is not None and (
            not isinstance(symbols, list) or not all(is_whole(s) and 1 <= s <= k for s in symbols)
        ):
            raise bad("codec.symbols", f"a list of lengths from 1 to codec.max_symbols ({k}), not {symbols!r}")
    shape = spec["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(is_whole(v) and lo <= v <= hi for v, (lo, hi) in zip(shape, INPUT_RANGES, strict=True))
    ):
        want = "[channels 1..4, height 4..1024, width 4..1024]"
        raise bad("input_shape", f"{want}, not {shape!r}")
    return spec

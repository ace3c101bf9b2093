"""Genotypes: a derived architecture as data that serialises to JSON and diffs cleanly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rkd_edge.errors import UserError
from rkd_edge.io import read_json, write_json
from rkd_edge.limits import IMAGE_SIZE_RANGE
from rkd_edge.nas.operations import PRIMITIVES

FORMAT = "rkd-edge/genotype@1"


# Allowed skeleton values (the config's ranges for the same search.* keys).
SKELETON_RANGES = {
    "in_channels": (1, 4),
    "image_size": IMAGE_SIZE_RANGE,
    "num_classes": (1, 1 << 20),
    "layers": (1, 64),
    "steps": (1, 16),
    "init_channels": (1, 4096),
    "stem_multiplier": (1, 64),
    "feature_dim": (1, 1 << 16),
    "stem_stride": (1, 2),
}


@dataclass
class Skeleton:
    """Everything about the network that is not searched."""

    in_channels: int
    image_size: int
    num_classes: int
    layers: int = 3
    steps: int = 3
    init_channels: int = 8
    stem_multiplier: int = 2
    feature_dim: int = 64
    stem_stride: int = 1  # 2 halves the resolution in the stem (cheaper cells on 28x28 and up)

    def validate(self, where: str = "genotype") -> None:
        """Every size a whole number in its range (a zero or negative width builds no network, or never ends)."""
        for name, (lo, hi) in SKELETON_RANGES.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise UserError(f"{where}: skeleton.{name} is {v!r}; it must be a whole number from {lo} to {hi}")

    def reduction_layers(self) -> tuple[int, ...]:
        return tuple(sorted({self.layers // 3, 2 * self.layers // 3})) if self.layers >= 3 else (1,)


def _edge(e) -> tuple[str, int]:
    """One ``[operation, input node]`` pair, read strictly: a node 1.5 or ``true`` is not node 1."""
    op, node = e
    if not isinstance(op, str) or isinstance(node, bool) or not isinstance(node, int):
        raise ValueError(f"edge {e!r} is not [operation name, whole node number]")
    return op, node


@dataclass
class Genotype:
    """Two cell types, each a list of ``(operation, input node)`` pairs, two per intermediate node.

    Input nodes are 0 (cell k-2 output), 1 (cell k-1 output), and 2.. for earlier intermediate nodes.
    """

    normal: list[tuple[str, int]]
    reduce: list[tuple[str, int]]
    skeleton: Skeleton
    normal_concat: list[int] = field(default_factory=list)
    reduce_concat: list[int] = field(default_factory=list)
    params: int = 0
    encoder_params: int = 0
    macs: int = 0  # multiply-accumulates of one image through encoder and classifier
    encoder_macs: int = 0
    latency_ms: float | None = None
    search: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format"] = FORMAT
        d["normal"] = [list(e) for e in self.normal]
        d["reduce"] = [list(e) for e in self.reduce]
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "genotype") -> Genotype:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(
                f"{where} is not an rkd-edge genotype (format {FORMAT}); regenerate it with rkd-edge search"
            )
        try:
            sk = Skeleton(**d["skeleton"])
            g = cls(
                normal=[_edge(e) for e in d["normal"]],
                reduce=[_edge(e) for e in d["reduce"]],
                skeleton=sk,
                normal_concat=list(d["normal_concat"]),
                reduce_concat=list(d["reduce_concat"]),
                params=int(d.get("params", 0)),
                encoder_params=int(d.get("encoder_params", 0)),
                # "flops" in genotypes written before: the encoder's MACs under another name
                encoder_macs=int(d.get("encoder_macs", d.get("flops", 0))),
                macs=int(d.get("macs", int(d.get("flops", 0)) + sk.feature_dim * sk.num_classes)),
                latency_ms=d.get("latency_ms"),
                search=d.get("search", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where} is malformed ({type(exc).__name__}: {exc}); regenerate it") from None
        g.validate(where)
        return g

    def validate(self, where: str = "genotype") -> None:
        """The skeleton's sizes, every edge's operation and input node, and the concatenated nodes."""
        self.skeleton.validate(where)
        steps = self.skeleton.steps
        for kind, cell, concat in (
            ("normal", self.normal, self.normal_concat),
            ("reduce", self.reduce, self.reduce_concat),
        ):
            if len(cell) != 2 * steps:
                raise UserError(f"{where}: a cell needs {2 * steps} edges, has {len(cell)}")
            for k, (op, inp) in enumerate(cell):
                if op not in PRIMITIVES:
                    raise UserError(f"{where}: unknown operation {op!r}; known: {', '.join(PRIMITIVES)}")
                if not 0 <= inp < 2 + k // 2:
                    raise UserError(f"{where}: edge {k} reads node {inp}, which does not exist yet")
            # Only intermediate nodes (2 .. steps+1) share one resolution in every cell: the concat reads those.
            bad = [i for i in concat if isinstance(i, bool) or not isinstance(i, int) or not 2 <= i < 2 + steps]
            if not concat or bad:
                raise UserError(
                    f"{where}: {kind}_concat {concat} must list intermediate nodes from 2 to {1 + steps}"
                    f"{f' ({bad[0]!r} is not one)' if bad else ''}; regenerate it with rkd-edge search"
                )

    def check_input(self, input_shape: tuple[int, int, int], where: str = "genotype") -> None:
        """The encoder reads images of ``input_shape`` ``(C, H, W)``: its stem must take C channels."""
        if self.skeleton.in_channels != input_shape[0]:
            raise UserError(
                f"{where} takes {self.skeleton.in_channels}-channel images, the data have {input_shape[0]}; "
                "use a genotype searched on this data (or set data.channels)"
            )

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_dict(read_json(path, "genotype"), str(path))

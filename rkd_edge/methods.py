"""The methods compared by ``--method``, declared as data: which stages run and what each changes.

* ``rkd-sc``: KDL-DARTS student, stage 1 distillation, CAT codec trained in stage 2 (ours).
* ``authors-2025``: the authors' earlier recipe: hand-designed ResNet-like student, feature-MSE
  distillation (then a linear probe for the classifier), a plain 2+2 transformer autoencoder without SNR
  input and without compression, trained one epoch per SNR in the fixed order -5, -2, 0, 5, 10, 15, 20 dB.
* ``deepjscc``: the searched student and the CAT codec trained end to end through the channel with CE
  only, no teacher.
* ``no-stage2``: the stage-1 student sending its features uncoded (no robust training).
"""

from __future__ import annotations

import copy

from rkd_edge.config import METHODS, RunConfig, StageConfig
from rkd_edge.errors import UserError
from rkd_edge.io import json_digest

METHOD_STAGES = {
    "rkd-sc": ["teacher", "search", "stage1", "stage2", "evaluate"],
    "authors-2025": ["teacher", "stage1", "probe", "stage2", "evaluate"],
    "deepjscc": ["teacher", "search", "stage2", "evaluate"],
    "no-stage2": ["teacher", "search", "stage1", "evaluate"],
}
assert tuple(METHOD_STAGES) == METHODS, "rkd_edge.config.METHODS names the methods declared here"
# What else a method changes, beside its stages and its config (method_config): the student it trains where
# that is not the searched genotype, and the methods whose stages train without the teacher.
ENCODERS = {"authors-2025": "resnet-like"}
WITHOUT_TEACHER = {"deepjscc"}  # end to end, CE only
TRAINED_STAGES = ("stage1", "probe", "stage2")  # the stages that train the system (each from the one before)


def previous_trained(method: str, stage: str) -> str | None:
    """The training stage of ``method`` that ``stage`` continues from (None: it starts from initial weights)."""
    before = METHOD_STAGES[method][: METHOD_STAGES[method].index(stage)]
    return next((s for s in reversed(before) if s in TRAINED_STAGES), None)


# The config sections each stage reads on top of those the stages before it read (every stage also reads
# ``seed``), compared after method_config, which writes what a method changes into the sections: a new
# run may start from another run's finished stages while these agree (``rkd-edge pipeline --from RUN``),
# even under another method. Stage 1 never runs the codec, so a codec sweep, or the uncoded no-stage2
# baseline, reuses one stage-1 student; evaluate is never reused (it reads every section).
STAGE_INPUTS = {
    "teacher": ("data", "teacher"),
    "search": ("search",),
    "stage1": ("stage1",),
    "probe": (),  # derived from stage1 (probe_stage)
    "stage2": ("stage2", "codec"),
}
AUTHORS_SNRS = [-5.0, -2.0, 0.0, 5.0, 10.0, 15.0, 20.0]


def reusable_stages(cfg: RunConfig, source: RunConfig) -> tuple[list[str], str | None]:
    """The leading stages of ``cfg``'s method that a run made with ``source`` already trained the same way.

    Args:
        cfg: The new run's config, as the user gave it.
        source: The finished run's config.

    Returns:
        The stages that can be reused, in order, and the first config section that differs (``None`` when
        every reusable stage agrees).
    """
    new, old = method_config(cfg).to_dict(), method_config(source).to_dict()
    if new["seed"] != old["seed"]:
        return [], "seed"
    stages = []
    for stage in METHOD_STAGES[cfg.method]:
        if stage not in STAGE_INPUTS:
            return stages, None
        differ = next((sec for sec in STAGE_INPUTS[stage] if new[sec] != old[sec]), None)
        if differ:
            return stages, differ
        stages.append(stage)
    return stages, None


def stage_inputs(cfg: RunConfig, stage: str) -> dict[str, str]:
    """A short sha256 of each config section ``stage`` reads, with those the stages before it read.

    A stage record keeps them, so that a finished stage is never taken for one trained with the settings
    ``config.json`` holds now (a hand-edited config would otherwise resume past stages trained otherwise).

    Args:
        cfg: The run's config as the user gave it (the method's changes are applied here).
        stage: One of the method's stages; ``evaluate`` reads every section but ``device``.
    """
    d = method_config(cfg).to_dict()
    sections = ["seed"]
    for s in METHOD_STAGES[cfg.method]:
        sections += STAGE_INPUTS.get(s, [k for k in d if k != "device"])
        if s == stage:
            break
    return {sec: json_digest(d[sec])[:16] for sec in dict.fromkeys(sections)}


def method_config(cfg: RunConfig) -> RunConfig:
    """The config a method actually trains with (a copy; the user's config is not changed)."""
    if cfg.method not in METHOD_STAGES:
        raise UserError(f"unknown method {cfg.method!r}; choose one of {', '.join(METHOD_STAGES)}")
    c = copy.deepcopy(cfg)
    if c.method == "authors-2025":
        c.stage1.losses = {"feat": 1.0}
        c.stage1.train = ["encoder", "projector"]
        c.codec.name = "plain"
        c.stage2 = StageConfig(
            epochs=len(AUTHORS_SNRS),
            lr=c.stage2.lr,
            losses={"recon": 1.0},
            train=["codec"],
            snr_schedule=AUTHORS_SNRS,
            channels=c.stage2.channels,
            limit_batches=c.stage2.limit_batches,
        )
    elif c.method == "deepjscc":
        c.stage2.losses = {"ce": 1.0}
        c.stage2.train = ["encoder", "codec", "classifier"]
        c.stage2.epochs = c.stage1.epochs + c.stage2.epochs
    elif c.method == "no-stage2":
        c.codec.name = "direct"
    return c


def probe_stage(cfg: RunConfig) -> StageConfig:
    """Linear probe of the classifier on frozen features (authors-2025 after feature-MSE distillation)."""
    return StageConfig(
        epochs=max(3, cfg.stage1.epochs // 4),
        lr=cfg.stage1.lr,
        losses={"ce": 1.0},
        train=["classifier"],
        limit_batches=cfg.stage1.limit_batches,
    )

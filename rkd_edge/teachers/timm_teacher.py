"""timm models as teachers (for example the CLIP ViT-B/32 image tower)."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import torch

from rkd_edge.checkpoints import looks_like_weights
from rkd_edge.errors import UserError, first_sentence
from rkd_edge.io import sha256_file
from rkd_edge.teachers.base import Teacher


class TimmTeacher(Teacher):
    """Wraps ``timm.create_model``; embedding = pre-logits features, logits = the classifier.

    Args:
        name: timm model name, e.g. ``vit_base_patch32_clip_224.openai``.
        weights: ``None`` (pretrained from the local cache), a file path, or ``"random"``.
    """

    def __init__(self, name: str, weights: str | None, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        try:
            import timm
        except ImportError:
            raise UserError("timm teachers need timm: pip install 'rkd-edge[vision]'") from None
        if name.split(".")[0] not in timm.list_models():
            raise UserError(f"unknown timm model {name!r}; list them with timm.list_models()")
        kwargs = {"num_classes": num_classes, "in_chans": in_channels}
        self._weights_id = "random"
        if weights == "random":
            kwargs["pretrained"] = False
        elif weights:
            if not Path(weights).is_file():
                raise UserError(f"teacher weights file not found: {weights}; give a local .safetensors/.bin")
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": os.fspath(weights)})
            self._weights_id = sha256_file(weights)[:16]
        else:
            kwargs["pretrained"] = True
            self._weights_id = "pretrained"
        try:
            offline = weights is None and os.environ.get("RKD_EDGE_DOWNLOAD") != "1"
            # torch warns about the pickle protocol of a foreign file before refusing it: the refusal is the line
            # timm logs the keys a file lacks or adds (the classifier, for another class count): _check_covers
            # says in one line what matters
            with _hub_offline(offline), warnings.catch_warnings(), _quiet_logger("timm"):
                warnings.simplefilter("ignore")
                self.model = _create(timm, name, image_size, kwargs)
                if weights not in (None, "", "random"):
                    _check_covers(timm, self.model, name, weights)
        except UserError:
            raise
        # A weights file from elsewhere fails in many ways (a bad safetensors header, a pickle that is not a
        # state dict, missing keys, an empty file's EOFError): each is one line, never a traceback.
        except Exception as exc:
            detail = first_sentence(exc)
            if weights not in (None, "", "random") and not looks_like_weights(Path(weights)):
                raise UserError(
                    f"teacher weights {weights} is not a PyTorch or safetensors file; give a .safetensors/.pth "
                    "state dict saved from this timm model"
                ) from None
            if weights not in (None, "", "random"):
                raise UserError(
                    f"teacher weights {weights} cannot be loaded into {name} ({type(exc).__name__}: {detail}); "
                    "give a .safetensors/.pth state dict saved from this timm model"
                ) from None
            if weights is None or "pretrained" in str(exc).lower() or "hub" in str(exc).lower():
                raise UserError(
                    f"pretrained weights for {name} are not in the local cache; set RKD_EDGE_DOWNLOAD=1 with "
                    f"internet access to download them once, or use timm:{name}@/path/to/weights"
                ) from None
            raise UserError(f"cannot load timm model {name}: {detail}") from None
        patch = getattr(getattr(self.model, "patch_embed", None), "patch_size", (1, 1))
        if image_size < max(patch):
            raise UserError(
                f"{name} uses {max(patch)}-pixel patches, larger than {image_size}-pixel images; "
                f"resize the data (--set data.image_size=224)"
            )
        self.spec = f"timm:{name}@{weights}" if weights else f"timm:{name}"
        self.num_classes = num_classes
        self.embed_dim = (
            self.model.num_features if not hasattr(self.model, "head_hidden_size") else self.model.head_hidden_size
        )

    def identity(self) -> str:
        return f"{self.spec}#{self._weights_id}"

    def head(self):
        return self.model.get_classifier()

    def forward(self, x: torch.Tensor):
        feats = self.model.forward_features(x)
        emb = self.model.forward_head(feats, pre_logits=True)
        return emb, self.model.get_classifier()(emb)


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_covers(timm, model, name: str, weights: str) -> None:
    """A weights file must hold every backbone tensor of the model: timm loads a file for another number of
    classes leniently (the classifier is dropped), so one holding none of the model's keys loaded with only
    a warning and left a random teacher at chance level."""
    state = timm.models.load_state_dict(weights, weights_only=True)
    head = model.pretrained_cfg.get("classifier") or ""
    heads = (head,) if isinstance(head, str) else tuple(head)
    wanted = [k for k in model.state_dict() if not k.startswith(heads) and not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise UserError(
            f"teacher weights {weights} lack {len(missing)} of the {len(wanted)} backbone tensors of {name} "
            f"(e.g. {missing[0]!r}); give a .safetensors/.pth state dict saved from this timm model"
        )


def _create(timm, name: str, image_size: int, kwargs: dict):
    """Create a model, passing the image size to models that take one (ViTs)."""
    try:
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError:
        return timm.create_model(name, **kwargs)


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Read pretrained weights from the local cache only, unless a download was asked for
    (``RKD_EDGE_DOWNLOAD=1``, as for datasets): without it an offline machine spends a minute in Hugging Face
    retries, printing a line for each, before the same error."""
    try:
        from huggingface_hub import constants
    except ImportError:  # timm without the hub: it has no download to avoid
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before

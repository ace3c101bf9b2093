"""Old artefacts keep working (issue 11).

A run and a bundle written by rkd-edge 0.1 before channel ids were fixed in a table
(``tests/fixtures/v0_1_*``, made with commit 2d1518c: the tests' tiny digits pipeline with codec dim 16
and K = 8, so small that its accuracy is near chance) load, evaluate and run; and appending a channel
type changes no parameter shape."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rkd_edge import channel_ids
from rkd_edge.channel_ids import CHANNEL_CAPACITY, CHANNEL_IDS
from rkd_edge.rundir import RunDir, load_run
from rkd_edge.runtime import Bundle, Runtime

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture()
def old_run(tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(FIXTURES / "v0_1_run", dst)
    return dst


def test_old_checkpoint_loads_with_its_channel_rows_in_place(old_run):
    saved = torch.load(old_run / "checkpoints" / "stage2.pt", weights_only=True)
    assert "channel_ids" not in saved  # written before tables were stored
    _, system, _ = load_run(old_run)
    for half in ("tx", "rx"):
        old = saved["model"][f"codec.{half}_cond.types.weight"]
        new = getattr(system.codec, f"{half}_cond").types.weight.detach()
        assert new.shape[0] == CHANNEL_CAPACITY and old.shape[0] == len(CHANNEL_IDS)
        assert torch.equal(new[: old.shape[0]], old) and not new[old.shape[0] :].any()


def test_old_run_evaluates_exactly_as_it_did(old_run):
    """The same seeded noise through the reloaded system gives the numbers version 0.1 wrote."""
    import json

    from rkd_edge.evaluate.run import evaluate_run

    old = {
        (r["channel"], r["snr_db"], r["k"]): r["accuracy"]
        for r in json.loads((old_run / "evaluation.json").read_text())["rows"]
    }
    evaluate_run(old_run)
    new = {
        (r["channel"], r["snr_db"], r["k"]): r["accuracy"]
        for r in json.loads((old_run / "evaluation.json").read_text())["rows"]
    }
    assert new == old and len(new) == 9


def test_old_bundle_runs_and_agrees_with_the_reloaded_run(old_run, tmp_path):
    b = tmp_path / "bundle"
    shutil.copytree(FIXTURES / "v0_1_bundle", b)
    assert "channel_ids" not in Bundle.open(b).manifest
    rt = Runtime(str(b))
    _, system, _ = load_run(old_run)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, rt.size, rt.size, rt.channels), dtype=np.uint8)
    x = rt.preprocess(images)
    f = rt.encode(x, preprocessed=True)
    with torch.no_grad():
        f_torch = system.encoder(torch.from_numpy(x)).numpy()
        sym_t, _ = system.codec.tx(
            torch.from_numpy(f_torch),
            torch.full((5,), 10.0),
            torch.full((5,), 8),
            torch.full((5,), CHANNEL_IDS["rayleigh"]),
        )
    np.testing.assert_allclose(f, f_torch, atol=1e-4)
    sym, mask = rt.transmit(f, 10.0, 8, "rayleigh")
    np.testing.assert_allclose(sym, sym_t.numpy(), atol=1e-4)
    assert mask.sum() == 5 * 8


def test_appending_a_channel_type_keeps_old_checkpoints_loading(old_run, monkeypatch):
    import rkd_edge.codec.cat as cat

    monkeypatch.setitem(CHANNEL_IDS, "satellite", len(CHANNEL_IDS))
    monkeypatch.setattr(cat, "CHANNEL_TYPES", [*channel_ids.CHANNEL_TYPES, "satellite"])
    rd = RunDir(old_run)
    _, system, _ = rd.load()
    assert system.codec.tx_cond.types.weight.shape[0] == CHANNEL_CAPACITY
    # A checkpoint that claims another id for a known type is refused.
    ck = rd.checkpoint("stage2")
    state = torch.load(ck, weights_only=True)
    state["channel_ids"] = {"awgn": 0, "identity": 1}
    torch.save(state, ck)
    from rkd_edge.errors import UserError

    with pytest.raises(UserError, match="other channel ids"):
        rd.load()


def test_channel_settings_come_from_the_manifest_or_the_old_bundles_config(tmp_path):
    """One reader of a bundle's fading settings: new manifests carry ``rician_k``; a bundle exported
    before that takes it from its saved run config, as the training did."""
    from rkd_edge.runtime.bundle import channel_kwargs, load_manifest

    old = FIXTURES / "v0_1_bundle"
    m = load_manifest(old)
    cfg_k = json.loads((old / "config.json").read_text())["codec"]["rician_k"]
    assert "rician_k" not in m["channel"]
    assert channel_kwargs(old, m) == {
        "mode": m["channel"]["rayleigh_mode"],
        "csi": m["channel"]["csi"],
        "k_factor": cfg_k,
    }
    m["channel"]["rician_k"] = cfg_k + 4.5
    assert channel_kwargs(old, m)["k_factor"] == cfg_k + 4.5
    assert channel_kwargs(tmp_path, {})["k_factor"] == 3.0  # neither recorded: the config default

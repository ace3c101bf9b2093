"""Pruning with torch-pruning: fewer parameters, a loadable run, and an exportable bundle."""

import copy
import json

import pytest
import torch

from rkd_edge.prune import _channels, _import_torch_pruning, _pruner, nearest_kept
from rkd_edge.rundir import load_run, shrink_to_state, weights_digest
from tests.conftest import run_cli, tiny_overrides


@pytest.mark.parametrize(
    ("current", "n_pruned", "round_to", "expected"),
    [
        (16, 5, 4, 4),  # keeps 11: the nearest multiple of 4 is 12 (torch-pruning's floor would keep 8)
        (8, 3, 4, 4),  # keeps 5 -> 4
        (8, 2, 4, 0),  # keeps 6: a half rounds up, to 8, so nothing goes
        (32, 10, 4, 8),  # keeps 22 -> 24
        (16, 15, 4, 12),  # keeps 1: at least one multiple (4) stays
        (3, 1, 4, 0),  # narrower than round_to: whole
        (16, 5, 1, 5),  # no rounding
        (40, 13, 8, 16),  # keeps 27 -> 24
    ],
)
def test_nearest_kept(current, n_pruned, round_to, expected):
    assert nearest_kept(current, n_pruned, round_to) == expected


def test_round_to_keeps_multiples_nearest_to_the_ratio(tiny_run):
    """The override reaches torch-pruning: layers torch-pruning rounds keep multiples of 4 channels, the
    nearest ones (its own rounding floors, which removed half of a 16-channel layer at 0.3)."""
    tp = _import_torch_pruning()
    _, system, spec = load_run(tiny_run)
    shape = tuple(spec["input_shape"])
    widths = {}
    for round_to in (1, 4):
        pruned = copy.deepcopy(system)
        _pruner(tp, pruned, shape, 0.3, round_to).step()
        widths[round_to] = _channels(pruned)
    before = _channels(system)
    rounded = [(b, a, r) for b, a, r in zip(before, widths[1], widths[4], strict=True) if r != a]
    assert rounded, "round_to changed no layer"
    # within 2 of what 0.3 keeps (a concatenation's parts are rounded together, not each to a multiple)
    assert all(abs(r - a) <= 2 and r <= b for b, a, r in rounded), rounded
    assert any(r % 4 == 0 and r > a // 4 * 4 for _, a, r in rounded), rounded  # nearest, not floored


def test_prune_run_then_export(tiny_run, tiny_teacher_dir, tmp_path):
    out = tmp_path / "pruned"
    proc = run_cli("-q", "prune", str(tiny_run), "--out", str(out), "--ratio", "0.5", "--epochs", "1", check=True)
    rec = json.loads(proc.stdout)
    assert rec["round_to"] == 8  # the default
    assert rec["after"]["encoder_params"] < 0.8 * rec["before"]["encoder_params"]
    assert rec["after"]["encoder_macs"] < rec["before"]["encoder_macs"]
    b, a = rec["before"]["conv_channels"], rec["after"]["conv_channels"]  # what the ratio came to, layer by layer
    assert len(a) == len(b) and all(0 < x <= y for x, y in zip(a, b, strict=True))
    assert rec["after"]["channels_removed"] == round(1 - sum(a) / sum(b), 4) > 0
    # the source's curves beside the pruned model's: a drop under noise is in view
    assert rec["before"]["curves"] == json.loads((tiny_run / "stages" / "evaluate.json").read_text())["curves"]
    _, system, spec = load_run(out)
    assert spec["encoder"]["pruned"]["ratio"] == 0.5
    assert sum(p.numel() for p in system.encoder.parameters()) == rec["after"]["encoder_params"]
    _, source, _ = load_run(tiny_run)
    full = json.loads((out / "prune.json").read_text())
    assert full["source"] == {"run": tiny_run.name, "weights_sha256": weights_digest(source)} and full["versions"]
    stages = sorted((out / "stages").glob("*.json"))
    assert stages and all(json.loads(p.read_text())["pruned_from"] == tiny_run.name for p in stages)
    # the trained stages' records describe the pruned model (they kept the source's accuracy and history)
    stage2 = json.loads((out / "stages" / "stage2.json").read_text())
    assert stage2["clean_test_accuracy"] == full["after"]["clean_accuracy"] and len(stage2["history"]) == 1
    assert json.loads((out / "stages" / "evaluate.json").read_text())["curves"] == full["curves"]
    run_cli("-q", "export", str(out), "--out", str(tmp_path / "bundle"), check=True)
    # resumed as a run, it keeps its pruned weights and every record says where it came from
    as_made = ["--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]  # the source run's settings
    run_cli("-q", "pipeline", "--out", str(out), *as_made, check=True)
    assert json.loads((out / "stages" / "teacher.json").read_text())["pruned_from"] == tiny_run.name
    # a stage of it trained again would be the unpruned student under its name (and prune.json another model's)
    (out / "stages" / "stage2.json").unlink()
    proc = run_cli("-q", "pipeline", "--out", str(out), *as_made)
    assert proc.returncode == 2 and "is a pruned run: its stage2 stage cannot be trained again" in proc.stderr
    assert run_cli("prune", str(tiny_run), "--out", str(out)).returncode == 2  # never overwrites
    # its stage-2 weights fit only the pruned encoder, and it keeps no stage-1 checkpoint: not a --from source
    proc = run_cli("-q", "pipeline", "--out", str(tmp_path / "again"), "--from", str(out), *tiny_overrides())
    assert proc.returncode == 2 and "is a pruned run" in proc.stderr and not (tmp_path / "again").exists()


def test_a_device_this_machine_lacks_is_refused_before_the_run_is_copied(tiny_run, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = run_cli("-q", "prune", str(tiny_run), "--out", str(tmp_path / "p"), "--epochs", "0", "--device", "cuda")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no hidden copy of the run (it held the source's absolute path)


def test_shrink_to_state_rebuilds_narrow_layers():
    wide = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, groups=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.Conv2d(8, 8, 3, groups=8),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(2),
    )
    narrow = torch.nn.Sequential(
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.BatchNorm2d(5),
        torch.nn.Conv2d(5, 5, 3, groups=5),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 2),
    )
    wide[4] = torch.nn.Linear(8, 2)
    shrink_to_state(wide, narrow.state_dict())
    wide.load_state_dict(narrow.state_dict())
    assert wide[2].groups == 5 and wide[4].in_features == 5

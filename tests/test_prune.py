"""Pruning with torch-pruning: fewer parameters, a loadable run, and an exportable bundle."""

import json

import torch

from rkd_edge.rundir import load_run, shrink_to_state, weights_digest
from tests.conftest import run_cli, tiny_overrides


def test_prune_run_then_export(tiny_run, tmp_path):
    out = tmp_path / "pruned"
    proc = run_cli("-q", "prune", str(tiny_run), "--out", str(out), "--ratio", "0.5", "--epochs", "1", check=True)
    rec = json.loads(proc.stdout)
    assert rec["after"]["encoder_params"] < 0.8 * rec["before"]["encoder_params"]
    assert rec["after"]["encoder_macs"] < rec["before"]["encoder_macs"]
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
    assert run_cli("prune", str(tiny_run), "--out", str(out)).returncode == 2  # never overwrites
    # its stage-2 weights fit only the pruned encoder, and it keeps no stage-1 checkpoint: not a --from source
    proc = run_cli("-q", "pipeline", "--out", str(tmp_path / "again"), "--from", str(out), *tiny_overrides())
    assert proc.returncode == 2 and "is a pruned run" in proc.stderr and not (tmp_path / "again").exists()


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

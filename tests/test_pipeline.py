"""The pipeline end to end (tiny settings): report, evaluation files, resume, dataset override."""

import csv
import json
import os
import shutil

import pytest

from tests.conftest import restamp_checkpoint, run_cli, tiny_overrides


def test_report_has_required_fields(tiny_run):
    r = json.loads((tiny_run / "report.json").read_text())
    assert {"dataset", "teacher", "student", "codec", "curves", "timings_s", "versions"} <= set(r)
    assert r["resumed_stages"] == []  # run without an interruption: every stage timed whole
    assert {"spec", "params", "accuracy"} <= set(r["teacher"])
    assert {"params", "macs", "encoder_macs", "accuracy"} <= set(r["student"])
    assert r["student"]["macs"] > r["student"]["encoder_macs"]  # the classifier's, in the student's count
    assert {"params", "symbols"} <= set(r["codec"])
    assert r["codec"]["tx_params"] + r["codec"]["rx_params"] == r["codec"]["params"] > 0
    assert set(r["curves"]) == {"awgn", "rayleigh"}
    assert all(0 <= a <= 1 for cur in r["curves"].values() for a in cur.values())
    md = (tiny_run / "report.md").read_text()
    assert "accuracy_vs_snr.png" in md and (tiny_run / "accuracy_vs_snr.png").stat().st_size > 1000
    assert r["student"]["params"] < r["teacher"]["params"]
    bounds = json.loads((tiny_run / "evaluation_summary.json").read_text())["upper_bounds"]
    assert bounds["teacher"] == r["teacher"]["accuracy"]
    assert bounds["student, noiseless codec"] == r["noiseless_accuracy"]
    assert "Upper bounds (noiseless): teacher" in md
    assert r["noiseless_symbols"] == max(r["codec"]["symbols"]) and f"at k = {r['noiseless_symbols']}." in md


def test_stage_records_say_where_they_ran(tiny_run):
    """What decides whether a seed repeats a stage exactly is kept beside it: device and torch threads."""
    for stage in ("search", "stage1", "stage2", "evaluate"):
        host = json.loads((tiny_run / "stages" / f"{stage}.json").read_text())["host"]
        assert host["device"] == "cpu" and host["torch_threads"] >= 1 and host["cpu"]


def test_evaluation_rows_carry_conventions(tiny_run):
    with open(tiny_run / "evaluation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        for key in ("channel", "mode", "snr_db", "k", "bandwidth_ratio", "source_dim", "ci_low", "ci_high"):
            assert row[key] != ""
        assert abs(float(row["bandwidth_ratio"]) - int(row["k"]) / int(row["source_dim"])) < 1e-6
        assert float(row["ci_low"]) <= float(row["accuracy"]) <= float(row["ci_high"])
    assert {r["mode"] for r in rows if r["channel"] == "rayleigh"} == {"block"}


def test_rerun_skips_finished_stages(tiny_run, tiny_teacher_dir):
    before = (tiny_run / "report.json").read_text()
    proc = run_cli(
        "pipeline", "--out", str(tiny_run), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides(), check=True
    )
    assert "done earlier, skipped" in proc.stderr
    after = json.loads((tiny_run / "report.json").read_text())
    assert after["curves"] == json.loads(before)["curves"]


def test_stage2_rerun_needs_only_what_stage1_trained(tiny_run, tiny_teacher_dir, tmp_path):
    """Stage 2 takes from stage 1 only the groups stage 1 trained; the codec keeps its seeded init. So a
    stage-1 checkpoint without codec weights (a codec changed since) reproduces the original stage 2,
    and a checkpoint whose encoder does not fit gives one line and exit 2."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for p in ("stages/stage2.json", "stages/evaluate.json", "checkpoints/stage2.pt"):
        (run / p).unlink()
    ck = run / "checkpoints" / "stage1.pt"
    state = torch.load(ck, weights_only=True)
    state["model"] = {n: v for n, v in state["model"].items() if not n.startswith("codec.")}
    torch.save(state, ck)
    restamp_checkpoint(run, "stage1")  # as a run whose stage 1 saved no codec would hold (a swap is refused)
    args = ["-q", "pipeline", "--out", str(run), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli(*args, check=True)
    redone = torch.load(run / "checkpoints" / "stage2.pt", weights_only=True)["model"]
    original = torch.load(tiny_run / "checkpoints" / "stage2.pt", weights_only=True)["model"]
    assert redone.keys() == original.keys()
    for name, value in original.items():
        torch.testing.assert_close(redone[name], value, msg=name)

    for p in ("stages/stage2.json", "stages/evaluate.json", "checkpoints/stage2.pt"):
        (run / p).unlink()
    state["model"] = {n: v for n, v in state["model"].items() if not n.startswith("encoder.cells.0")}
    torch.save(state, ck)
    restamp_checkpoint(run, "stage1")
    proc = run_cli(*args)
    assert proc.returncode == 2 and "rerun stage stage1" in proc.stderr and "Traceback" not in proc.stderr


def test_changed_config_refused(tiny_run, tiny_teacher_dir):
    proc = run_cli(
        "pipeline",
        "--out",
        str(tiny_run),
        "--teacher",
        f"local:{tiny_teacher_dir}",
        *tiny_overrides(),
        "--set",
        "seed=3",
    )
    assert proc.returncode == 2 and "different config" in proc.stderr


def test_edited_config_does_not_resume_past_stages_trained_otherwise(tiny_run, tiny_teacher_dir, tmp_path):
    """config.json edited to agree with a new --set: the stage records still say what stage 2 read."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["stage2"]["lr"] = 0.123
    (run / "config.json").write_text(json.dumps(cfg))
    args = ["pipeline", "--out", str(run), "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    proc = run_cli(*args, "--set", "stage2.lr=0.123")
    assert proc.returncode == 2 and "stage stage2" in proc.stderr and "stage2 settings" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # the records name each section a stage read, with those of the stages before it
    inputs = json.loads((run / "stages" / "stage1.json").read_text())["inputs"]
    assert sorted(inputs) == ["data", "search", "seed", "stage1", "teacher"]


def test_evaluate_cli_on_run(tiny_run, tmp_path):
    run_cli(
        "-q",
        "evaluate",
        str(tiny_run),
        "--channel",
        "rician",
        "--snr",
        "0,5",
        "--symbols",
        "4",
        "--trials",
        "1",
        "--out",
        str(tmp_path),
        check=True,
    )
    data = json.loads((tmp_path / "evaluation.json").read_text())
    assert {r["channel"] for r in data["rows"]} == {"rician", "identity"}
    k_factor = json.loads((tiny_run / "config.json").read_text())["codec"]["rician_k"]
    assert {r["k_factor"] for r in data["rows"]} == {k_factor, "-"}  # Rician's K beside each of its numbers
    bad = run_cli("evaluate", str(tiny_run), "--symbols", "99")
    assert bad.returncode == 2 and "outside" in bad.stderr


def test_imagefolder_runs_whole_pipeline(rgb_folder, tmp_path):
    out = tmp_path / "run"
    run_cli(
        "-q", "pipeline", "--out", str(out), "--dataset", f"imagefolder:{rgb_folder}", *tiny_overrides(), check=True
    )
    r = json.loads((out / "report.json").read_text())
    assert r["dataset"] == f"imagefolder:{rgb_folder}"
    assert json.loads((out / "teacher" / "teacher.json").read_text())["input_shape"] == [3, 16, 16]


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("authors-2025", marks=pytest.mark.slow),
        "deepjscc",
        pytest.param("no-stage2", marks=pytest.mark.slow),
    ],
)
def test_every_method_runs(method, tiny_teacher_dir, tmp_path):
    """The other methods end to end (rkd-sc is every other test's); deepjscc's path differs the most, so it
    runs by default and the two others with -m slow."""
    out = tmp_path / method
    args = ["-q", "pipeline", "--out", str(out), "--method", method, "--teacher", f"local:{tiny_teacher_dir}"]
    run_cli(*args, *tiny_overrides(), check=True)
    r = json.loads((out / "report.json").read_text())
    assert r["method"] == method and r["curves"]["awgn"]
    # deepjscc's classifier never saw clean features: its accuracy is the noiseless codec path's.
    assert r["student"]["accuracy_path"].startswith("noiseless" if method == "deepjscc" else "clean")
    if method == "deepjscc":
        assert r["student"]["accuracy"] == r["noiseless_accuracy"]


def test_pipeline_under_torchrun_two_processes(tmp_path):
    """The README's scale-out command, with the teacher trained inside the run (rank 0 alone)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rkd_edge",
        "-q",
        "pipeline",
        "--out",
        str(out),
        *tiny_overrides(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((out / "report.json").read_text())
    assert r["curves"]["awgn"] and (out / "checkpoints" / "stage2.pt").is_file()
    assert not list((out / "train").glob("*.ckpt"))  # epoch checkpoints removed once a stage finishes
    assert (out / "teacher" / "teacher.json").is_file()


def test_from_reuses_the_stages_whose_settings_agree(tiny_run, tiny_teacher_dir, tmp_path):
    """A codec change reuses teacher, search and stage 1 of another run (copied, marked) and trains
    stage 2 anew; a run that shares nothing, or no run at all, is one line and leaves nothing behind."""
    base = ["-q", "pipeline", "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    out = tmp_path / "fork"
    forked = [*base[:4], *tiny_overrides("codec.dim=8", "codec.heads=2")]  # the codec changed, the rest as tiny_run
    run_cli(*forked, "--out", str(out), "--from", str(tiny_run), check=True)
    for stage in ("search", "stage1"):  # where it came from, relative to the new run
        rec = json.loads((out / "stages" / f"{stage}.json").read_text())
        assert (out / rec["reused_from"]).resolve() == tiny_run.resolve()
    assert (out / "checkpoints/stage1.pt").read_bytes() == (tiny_run / "checkpoints/stage1.pt").read_bytes()
    assert (out / "genotype.json").read_bytes() == (tiny_run / "genotype.json").read_bytes()
    assert "reused_from" not in json.loads((out / "stages/stage2.json").read_text())
    assert json.loads((out / "system.json").read_text())["codec"]["dim"] == 8 and (out / "report.json").is_file()

    uncoded = tmp_path / "uncoded"  # another method whose first stages agree: only evaluate runs
    run_cli(*base, "--out", str(uncoded), "--from", str(tiny_run), "--method", "no-stage2", check=True)
    assert all(
        "reused_from" in json.loads((uncoded / "stages" / f"{s}.json").read_text()) for s in ("search", "stage1")
    )
    assert (uncoded / "checkpoints/stage1.pt").read_bytes() == (tiny_run / "checkpoints/stage1.pt").read_bytes()
    assert json.loads((uncoded / "report.json").read_text())["method"] == "no-stage2"

    for args, needle in (
        (["--from", str(tiny_run), "--set", "seed=5"], "its seed settings differ"),
        (["--from", str(tmp_path)], "is not an rkd-edge run folder"),
    ):
        proc = run_cli(*base, "--out", str(tmp_path / "refused"), *args)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "refused").exists()
    proc = run_cli(*base, "--out", str(tiny_run), "--from", str(tiny_run))
    assert proc.returncode == 2 and "names the run itself" in proc.stderr

    linked = tmp_path / "linked"  # a source holding a symbolic link is refused before anything is made
    shutil.copytree(tiny_run, linked, ignore=shutil.ignore_patterns("*.lock"))
    (linked / "cache" / "elsewhere").symlink_to(tmp_path)
    proc = run_cli(*base, "--out", str(tmp_path / "refused"), "--from", str(linked))
    assert proc.returncode == 2 and "symbolic link" in proc.stderr and not (tmp_path / "refused").exists()
    (linked / "cache" / "elsewhere").unlink()
    os.mkfifo(linked / "cache" / "elsewhere")  # a FIFO would block the copy
    proc = run_cli(*base, "--out", str(tmp_path / "refused"), "--from", str(linked))
    assert proc.returncode == 2 and "special file" in proc.stderr and not (tmp_path / "refused").exists()


def test_task_head_at_the_transmitter_starts_from_the_stage1_classifier(tiny_run, tiny_teacher_dir, tmp_path):
    """``codec.posterior``: stage 2 starts the transmitter's task head from the stage-1 classifier (here
    stage 2 trains the classifier only, so the head must still be exactly that copy). The run also has the
    receiver's map per length (``codec.rx_per_length``): the spec rebuilds it for stage 2 and evaluation.
    ONNX export of both: ``tests/test_export.py::test_codec_options_export_with_parity``."""
    import torch

    out = tmp_path / "posterior"
    sets = ["--set", "codec.posterior=true", "--set", "codec.rx_per_length=true", "--set", "stage2.train=[classifier]"]
    base = ["-q", "pipeline", "--teacher", f"local:{tiny_teacher_dir}", *tiny_overrides()]
    run_cli(*base, "--out", str(out), "--from", str(tiny_run), *sets, check=True)
    stage1 = torch.load(out / "checkpoints/stage1.pt", weights_only=True)["model"]
    stage2 = torch.load(out / "checkpoints/stage2.pt", weights_only=True)["model"]
    torch.testing.assert_close(stage2["codec.tx_head.weight"], stage1["classifier.weight"])
    torch.testing.assert_close(stage2["codec.tx_head.bias"], stage1["classifier.bias"])
    assert not torch.equal(stage2["classifier.weight"], stage1["classifier.weight"])  # stage 2 did train
    spec = json.loads((out / "system.json").read_text())["codec"]
    assert spec["posterior_classes"] == stage1["classifier.weight"].shape[0]
    assert spec["rx_per_length"] and stage2["codec.rx_lin_w"].shape[0] == len(spec["symbols"])


def test_evaluation_passes_grouped_for_a_gpu_give_the_batch_by_batch_rows(tiny_run, monkeypatch):
    """Several noise batches through the codec in one pass (what a GPU does) and batch by batch (the CPU):
    the channel draws the same noise in the same order, so every point's accuracy agrees (up to a
    decision flipped by float rounding in a larger matrix product)."""
    from rkd_edge.evaluate import snr
    from rkd_edge.evaluate.snr import Grid, evaluate_torch
    from rkd_edge.rundir import RunDir, load_splits

    cfg, system, _ = RunDir(tiny_run).load()
    splits = load_splits(cfg)
    monkeypatch.setattr(snr, "NOISE_BATCH", 64)  # the tiny test split holds 359 images: 6 noise batches
    grid = Grid(["awgn", "rayleigh"], [-5.0, 5.0], list(system.codec.symbol_set), 2, cfg.seed)
    one = evaluate_torch(system, splits.test, grid, cfg.codec, splits.source_dim)
    grouped = evaluate_torch(system, splits.test, grid, cfg.codec, splits.source_dim, group=3)
    assert len(one) == len(grouped) == 2 * 2 * len(system.codec.symbol_set)
    for a, b in zip(one, grouped, strict=True):
        assert (a["channel"], a["snr_db"], a["k"]) == (b["channel"], b["snr_db"], b["k"])
        assert abs(a["accuracy"] - b["accuracy"]) <= 1 / a["n"], (a, b)


def test_a_search_recorded_with_flops_reports_the_students_macs(tiny_run):
    """Runs searched before the name said MACs hold the encoder's as ``flops``: the report's search line
    adds the classifier's, as its label says (it gave the encoder's alone)."""
    from rkd_edge.report import markdown

    r = json.loads((tiny_run / "report.json").read_text())
    results = {p.stem: json.loads(p.read_text()) for p in (tiny_run / "stages").glob("*.json")}
    old = {k: v for k, v in results["search"].items() if k != "macs"}
    old["flops"] = r["student"]["encoder_macs"]
    assert f"MACs = {r['student']['macs']:,} (encoder and classifier)" in markdown(r, {**results, "search": old})

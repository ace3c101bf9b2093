"""The search command end to end on digits: reproducible genotype and a falling cost with lambda."""

import json

from tests.conftest import run_cli

QUICK = [
    "--set",
    "search.epochs=2",
    "--set",
    "search.warmup_epochs=0",
    "--set",
    "search.limit_batches=3",
    "--set",
    "search.batch_size=32",
    "--set",
    "search.layers=3",
    "--set",
    "search.steps=2",
]


def search_cli(out, teacher_dir, *extra):
    run_cli(
        "-q",
        "search",
        "--dataset",
        "digits",
        "--teacher",
        f"local:{teacher_dir}",
        "--out",
        str(out),
        *QUICK,
        *extra,
        check=True,
    )


def test_search_same_seed_same_genotype(tmp_path, tiny_teacher_dir):
    genos = []
    for name in ("a", "b"):
        out = tmp_path / name
        search_cli(out, tiny_teacher_dir)
        genos.append(json.loads((out / "genotype.json").read_text()))
        assert (out / "search_log.json").is_file() and (out / "arch_weights.png").stat().st_size > 1000
        assert {"params", "macs", "encoder_macs", "normal", "reduce"} <= set(genos[-1])
    assert genos[0] == genos[1]
    # search.derive_max_params: the same search, its cells built at the widest width within the budget
    # (search.derive_channels builds them at a given width through the same widen(); tests/test_nas.py)
    budget = 2 * genos[0]["params"]
    search_cli(tmp_path / "budget", tiny_teacher_dir, "--set", f"search.derive_max_params={budget}")
    fit = json.loads((tmp_path / "budget" / "genotype.json").read_text())
    assert (fit["normal"], fit["reduce"]) == (genos[0]["normal"], genos[0]["reduce"])
    assert fit["skeleton"]["init_channels"] > 8 and fit["search"]["searched_channels"] == 8
    assert genos[0]["params"] < fit["params"] <= budget and fit["macs"] > genos[0]["macs"]


def test_lambda_sweep_writes_pareto(tmp_path, tiny_teacher_dir):
    out = tmp_path / "sweep"
    search_cli(out, tiny_teacher_dir, "--lambda", "0,20", "--set", "search.sweep_epochs=1")
    rows = (out / "pareto.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("lambda,params")
    costs = [float(r.split(",")[4]) for r in rows[1:]]
    assert costs[1] < costs[0]  # expected cost falls as lambda rises
    # A sweep stopped after its lambdas were scored (before the stage was recorded) reuses them on resume.
    searched = {p: p.stat().st_mtime_ns for p in (out / "sweep").rglob("genotype.json")}
    (out / "stages" / "search.json").unlink()
    (out / "genotype.json").unlink()
    proc = run_cli(
        "search", "--dataset", "digits", "--teacher", f"local:{tiny_teacher_dir}", "--out", str(out), *QUICK,
        "--lambda", "0,20", "--set", "search.sweep_epochs=1", check=True,
    )  # fmt: skip
    assert proc.stderr.count("searched and scored earlier, reused") == 2, proc.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in (out / "sweep").rglob("genotype.json")} == searched
    assert (out / "pareto.csv").read_text().strip().splitlines() == rows
    # its seconds are the part after the stop, and the record says so (as a resumed stage's of epochs)
    assert json.loads((out / "stages" / "search.json").read_text()).get("resumed") is True

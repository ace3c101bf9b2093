"""CUDA: every command on tiny settings, CPU/CUDA parity, and GPU-trained runs on a machine without one.

Tests marked ``gpu`` skip without CUDA (``python -m pytest -m gpu tests/test_gpu.py``; ``benchmarks/gpu.py``
runs them). The unmarked tests run everywhere: they check the device plumbing that a CPU can check (the
device batch path against the host one, generator devices, ``--device`` errors, the benchmark's no-GPU
exit). What only a GPU shows (a generator on the wrong device, a host tensor meeting a CUDA one) is
caught by the ``gpu`` tests alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_cli, tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU visible (torch.cuda.is_available() is False)")

# CPU against CUDA forward passes in float32. cuDNN convolutions may use TF32 on Ampere and later
# (PyTorch's default), about 1e-3 relative: outputs agree within ATOL + RTOL * max|reference|.
ATOL, RTOL = 1e-4, 5e-3


def cli(*args: str, hide_gpu: bool = False, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """The real ``rkd-edge`` entry point in a fresh process; ``hide_gpu`` runs it as on a machine without one."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if hide_gpu else None
    return run_cli(*args, check=check, timeout=timeout, env=env)


def sets(*pairs: str) -> list[str]:
    """``--set`` options: ``sets("a.b=1", "c=2")``."""
    return [a for kv in pairs for a in ("--set", kv)]


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def records(run: Path) -> dict:
    """Every stage record of a run without its timings (what must repeat for the same seed)."""

    def strip(o):
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if "second" not in k}
        return [strip(v) for v in o] if isinstance(o, list) else o

    return {p.name: strip(json.loads(p.read_text())) for p in sorted((run / "stages").glob("*.json"))}


# --- everywhere: the device plumbing a CPU can check --------------------------------------------------
def test_device_batches_equal_host_batches(digits):
    """The GPU batch path (uint8 images held by the view, order/positions/labels as tensors, transform and
    augmentation on the view's device) gives exactly the host path's batches when that device is the CPU,
    resident or streamed, with DDP shares too."""
    for resident in (True, False):
        view = digits.train.view("cpu", resident=resident)
        for args in ((64, True, 3, 2, False), (64, True, 3, 2, True), (50, True, 1, 0, True, 1, 2), (128,)):
            host, dev = list(digits.train.batches(*args)), list(view.batches(*args))
            assert len(host) == len(dev) > 0
            for (x1, y1, p1), (x2, y2, p2) in zip(host, dev, strict=True):
                assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(p1, p2)
    assert digits.train.on("cpu") is digits.train


def test_augment_gathers_what_a_slice_loop_cuts():
    from rkd_edge.data.transforms import augment

    def reference(x, g, flip):
        b, _, h, w = x.shape
        pad = max(1, h // 8)
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
        out = torch.stack([xp[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])
        if flip:
            mask = torch.rand(b, generator=g) < 0.5
            out[mask] = out[mask].flip(-1)
        return out

    for shape in ((64, 1, 8, 8), (9, 3, 28, 28)):
        x = torch.randn(*shape)
        for flip in (False, True):
            a = reference(x, torch.Generator().manual_seed(7), flip)
            b = augment(x, torch.Generator().manual_seed(7), flip)
            assert torch.equal(a, b)
    assert not torch.equal(augment(x, torch.Generator().manual_seed(1), True), x)


def test_conditions_come_from_the_generator_device_and_stream():
    """Stage-2 conditions are drawn on ``g.device`` (the batch's), in the stream they always had."""
    from rkd_edge.config import StageConfig
    from rkd_edge.distill.stages import draw_conditions

    sc = StageConfig(snr_db=[-10.0, 20.0])
    g = torch.Generator().manual_seed(5)
    snr, idx, ks = draw_conditions(300, sc, [4, 8, 16], 0, g, 2)
    ref = torch.Generator().manual_seed(5)
    assert torch.equal(snr, -10.0 + 30.0 * torch.rand(300, generator=ref))
    assert torch.equal(idx, torch.randint(0, 2, (300,), generator=ref))
    assert torch.equal(ks, torch.tensor([4, 8, 16])[torch.randint(0, 3, (300,), generator=ref)])
    assert {t.device.type for t in (snr, idx, ks)} == {g.device.type}
    assert snr.min() >= -10 and snr.max() <= 20 and set(ks.tolist()) == {4, 8, 16}
    fixed, _, _ = draw_conditions(4, StageConfig(snr_schedule=[3.0, 7.0]), torch.tensor([16]), 1, g, 1)
    assert fixed.tolist() == [7.0] * 4


def test_device_choice_errors_are_one_line(tmp_path):
    from rkd_edge import env
    from rkd_edge.errors import UserError

    for bad in ("gpu", "cuda:1", "CUDA", ""):
        with pytest.raises(UserError, match="unknown device"):
            env.pick_device(bad)
    assert env.pick_device("cpu") == "cpu"
    assert env.pick_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    try:  # a command on an existing run decides where it runs, whatever trained it
        env.set_device_override("cpu")
        assert env.pick_device("cuda") == "cpu"
    finally:
        env.set_device_override(None)
    out = tmp_path / "run"
    one_line_error(cli("-q", "pipeline", "--out", str(out), "--device", "gpu", check=False), "gpu", "auto, cpu")
    assert not out.exists()
    one_line_error(cli("-q", "teacher", "eval", "cnn-base", "--device", "cuda:1", check=False), "cuda:1")
    one_line_error(cli("-q", "evaluate", str(tmp_path), "--device", "gpu", check=False), "gpu")
    if not HAS_CUDA:
        one_line_error(cli("-q", "pipeline", "--out", str(out), "--device", "cuda", check=False), "CUDA")
        assert not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU exit; this machine has a GPU")
def test_gpu_benchmark_fails_cleanly_without_gpu(tmp_path):
    results = ROOT / "benchmarks" / "results"
    before = set(results.glob("gpu-*"))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    one_line_error(proc, "CUDA")
    assert set(results.glob("gpu-*")) == before
    assert not any(tmp_path.iterdir())


# --- on a GPU ----------------------------------------------------------------------------------------
TINY = tiny_overrides("search.limit_batches=2")


@pytest.fixture(scope="module")
def cuda_teacher(tmp_path_factory) -> Path:
    if not HAS_CUDA:
        pytest.skip("no CUDA GPU")
    out = tmp_path_factory.mktemp("cuda-teacher")
    args = ["--dataset", "digits", "--arch", "cnn-base", "--epochs", "1", "--device", "cuda"]
    cli("-q", "teacher", "train", "--out", str(out), *args, *sets("data.augment=true"))
    return out


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory, cuda_teacher) -> Path:
    """rkd-sc on CUDA with ``--device cuda`` recorded in its config, over AWGN, Rayleigh and Rician with the
    CSI at the decoder, with every codec option on (gains, the transmitter's task head, a receiver map per
    length, every length each step)."""
    out = tmp_path_factory.mktemp("cuda-runs") / "rkd"
    chans = "[awgn,rayleigh,rician]"
    extra = sets(f"stage2.channels={chans}", f"evaluate.channels={chans}", "codec.csi=decoder", "stage2.lengths=all")
    extra += sets("codec.gains=true", "codec.posterior=true", "codec.rx_per_length=true", "codec.symbols=[4,8,16]")
    cli("-q", "pipeline", "--out", str(out), "--teacher", f"local:{cuda_teacher}", "--device", "cuda", *TINY, *extra)
    return out


@pytest.mark.gpu
@needs_cuda
def test_teacher_train_and_eval_on_cuda(cuda_teacher):
    rec = json.loads((cuda_teacher / "teacher.json").read_text())
    assert rec["accuracy"] > 0.3 and rec["config"]["device"] == "cuda"
    out = json.loads(cli("-q", "teacher", "eval", f"local:{cuda_teacher}", "--device", "cuda").stdout)
    assert abs(out["accuracy"] - rec["accuracy"]) < 0.02
    hidden = json.loads(cli("-q", "teacher", "eval", f"local:{cuda_teacher}", hide_gpu=True).stdout)
    assert abs(hidden["accuracy"] - out["accuracy"]) < 0.02


@pytest.mark.gpu
@needs_cuda
def test_pipeline_on_cuda_all_channels_csi_at_decoder(cuda_run):
    rep = json.loads((cuda_run / "report.json").read_text())
    assert rep["student"]["accuracy"] is not None
    assert set(rep["curves"]) == {"awgn", "rayleigh", "rician"}
    assert (cuda_run / "evaluation.csv").is_file()


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    ("method", "extra"),
    [("authors-2025", []), ("deepjscc", sets("stage1.amp=bf16", "stage2.amp=bf16")), ("no-stage2", [])],
)
def test_other_methods_on_cuda(method, extra, cuda_run, cuda_teacher, tmp_path):
    """The other three methods (the search reused from the rkd-sc run); deepjscc under bf16 autocast."""
    out = tmp_path / method
    common = ["--teacher", f"local:{cuda_teacher}", "--device", "cuda", *TINY]
    cli(
        "-q",
        "pipeline",
        "--out",
        str(out),
        "--method",
        method,
        *common,
        *sets(f"search.genotype={cuda_run / 'genotype.json'}"),
        *extra,
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep["curves"] and all(np.isfinite(v) for c in rep["curves"].values() for v in c.values())


@pytest.mark.gpu
@needs_cuda
def test_search_second_order_partial_channels_on_cuda(cuda_teacher, tmp_path):
    out = tmp_path / "search"
    rec = json.loads(
        cli(
            *("-q", "search", "--out", str(out), "--teacher", f"local:{cuda_teacher}", "--device", "cuda", *TINY),
            *sets("search.second_order=true", "search.partial_channels=2", "search.init_channels=8"),
        ).stdout
    )
    assert rec["params"] > 0 and (out / "genotype.json").is_file()


@pytest.mark.gpu
@needs_cuda
def test_distill_robust_on_cuda_same_seed_same_run(cuda_run, cuda_teacher, tmp_path):
    common = ["--teacher", f"local:{cuda_teacher}", "--device", "cuda", *TINY]
    common += sets(f"search.genotype={cuda_run / 'genotype.json'}", "data.augment=true")
    a, b = tmp_path / "a", tmp_path / "b"
    cli("-q", "distill", "--out", str(a), *common)
    cli("-q", "distill", "--out", str(b), *common)
    assert records(a)["stage1.json"] == records(b)["stage1.json"]
    cli("-q", "robust", "--out", str(a), *common)
    hist = records(a)["stage2.json"]["history"]
    assert np.isfinite(hist[-1]["loss"]) and hist[-1]["val_acc"] > 0


@pytest.mark.gpu
@needs_cuda
def test_cuda_graph_steps_train_as_eager_steps(cuda_run, cuda_teacher, tmp_path):
    """``cuda_graph``: stage 1 replayed from a graph takes the same steps as eager (same batches, no noise:
    losses within float tolerance, so no batch is skipped or stepped twice); stage 2 and the teacher train
    under it, and the same seed repeats the same run."""
    epochs = tiny_overrides("search.limit_batches=2", "stage1.epochs=2", "stage2.epochs=2")
    common = ["--teacher", f"local:{cuda_teacher}", "--device", "cuda", *epochs]
    common += sets(f"search.genotype={cuda_run / 'genotype.json'}")
    graph = sets("stage1.cuda_graph=true", "stage2.cuda_graph=true")
    eager, g1, g2 = tmp_path / "eager", tmp_path / "g1", tmp_path / "g2"
    cli("-q", "distill", "--out", str(eager), *common)
    for out in (g1, g2):
        cli("-q", "robust", "--out", str(out), *common, *graph)
    e, a, b = (records(r)["stage1.json"]["history"] for r in (eager, g1, g2))
    for he, ha in zip(e, a, strict=True):
        assert abs(he["loss"] - ha["loss"]) <= 1e-3 * abs(he["loss"]), (he, ha)
    assert records(g1)["stage2.json"] == records(g2)["stage2.json"]
    assert np.isfinite(records(g1)["stage2.json"]["history"][-1]["loss"])
    teacher = tmp_path / "teacher"
    args = ["--dataset", "digits", "--arch", "cnn-base", "--epochs", "2", "--device", "cuda"]
    cli("-q", "teacher", "train", "--out", str(teacher), *args, *sets("teacher.cuda_graph=true"))
    assert json.loads((teacher / "teacher.json").read_text())["accuracy"] > 0.3


@pytest.mark.gpu
@needs_cuda
def test_cpu_cuda_forward_parity(cuda_run, digits):
    """Encoder, codec and classifier of a CUDA-trained run: CPU and CUDA agree within ATOL + RTOL * scale;
    identity channel exactly; every channel returns the sent symbols at 200 dB on both (equalised)."""
    from rkd_edge.channel import CHANNEL_TYPES, create_channel
    from rkd_edge.rundir import load_run

    _, cpu_sys, _ = load_run(cuda_run)
    _, gpu_sys, _ = load_run(cuda_run)
    gpu_sys.cuda()

    def close(a, b):
        a, b = a.detach().float().cpu(), b.detach().float().cpu()
        assert (a - b).abs().max() <= ATOL + RTOL * a.abs().max(), float((a - b).abs().max())

    x, y, _ = next(digits.test.batches(256))
    b = len(x)
    with torch.no_grad():
        f_c, f_g = cpu_sys.encoder(x), gpu_sys.encoder(x.cuda())
        close(f_c, f_g)
        snr, k = torch.full((b,), 5.0), torch.full((b,), gpu_sys.codec.max_symbols)
        ctype = torch.full((b,), CHANNEL_TYPES.index("rayleigh"))
        sym_c, mask_c = cpu_sys.codec.tx(f_c, snr, k, ctype)
        sym_g, mask_g = gpu_sys.codec.tx(f_c.cuda(), snr.cuda(), k.cuda(), ctype.cuda())
        close(sym_c, sym_g)
        close(mask_c, mask_g)
        csi = torch.randn_like(sym_c)
        rx_c = cpu_sys.codec.rx(sym_c, mask_c, snr, ctype, csi)
        rx_g = gpu_sys.codec.rx(sym_c.cuda(), mask_c.cuda(), snr.cuda(), ctype.cuda(), csi.cuda())
        close(rx_c, rx_g)
        lc, lg = cpu_sys.classifier(rx_c), gpu_sys.classifier(rx_g)
        close(lc, lg)
        assert (lc.argmax(-1) == lg.argmax(-1).cpu()).float().mean() >= 0.99
        ident = create_channel("identity")
        assert torch.equal(ident(sym_c, snr, mask_c).y, ident(sym_c.cuda(), snr.cuda(), mask_c.cuda()).y.cpu())
        for name in ("awgn", "rayleigh", "rician"):
            for csi_mode in ("zf", "mmse"):
                ch = create_channel(name, csi=csi_mode, mode="fast")
                for dev in ("cpu", "cuda"):
                    g = torch.Generator(device=dev).manual_seed(0)
                    o = ch(sym_c.to(dev), torch.full((b,), 200.0, device=dev), mask_c.to(dev), g)
                    assert o.y.device.type == dev and o.csi.device.type == dev
                    assert (o.y.cpu() - sym_c).abs().max() < 1e-3
        # Noise statistics on the GPU: CN(0, 10^(-snr/10)) per symbol, |h|^2 of mean 1.
        z = torch.zeros(4096, 256, 2, device="cuda")
        g = torch.Generator(device="cuda").manual_seed(1)
        n = create_channel("awgn")(z, torch.zeros(4096, device="cuda"), None, g).y
        assert abs(float(n.pow(2).sum(-1).mean()) - 1.0) < 0.01
        h = create_channel("rayleigh", csi="decoder", mode="fast").draw_h(4096, 256, g, torch.device("cuda"))
        assert abs(float(h.pow(2).sum(-1).mean()) - 1.0) < 0.01


@pytest.mark.gpu
@needs_cuda
def test_cuda_run_evaluate_export_prune_without_gpu(cuda_run, tmp_path):
    """A run trained with ``--device cuda`` evaluates, exports (ONNX Runtime on the CPU) and prunes where
    no GPU is visible. Evaluating on the GPU draws the same (host) noise as on the CPU: curves within one
    point. ONNX Runtime draws its own noise: its noiseless accuracy within one point, curves within ten."""
    run = tmp_path / "run"
    shutil.copytree(cuda_run, run)
    assert json.loads((run / "config.json").read_text())["device"] == "cuda"
    args = ["--snr", "0,10", "--trials", "1"]
    on_gpu = json.loads(cli("-q", "evaluate", str(run), *args, "--device", "cuda", "--out", str(tmp_path / "g")).stdout)
    on_cpu = json.loads(cli("-q", "evaluate", str(run), *args, "--out", str(tmp_path / "c"), hide_gpu=True).stdout)
    for ch, curve in on_cpu["curves"].items():
        for snr, acc in curve.items():
            assert abs(acc - on_gpu["curves"][ch][snr]) <= 0.01, (ch, snr)
    one_line_error(cli("-q", "evaluate", str(run), "--device", "cuda", hide_gpu=True, check=False), "CUDA")
    bundle = tmp_path / "bundle"
    cli("-q", "export", str(run), "--out", str(bundle), hide_gpu=True)
    onnx = json.loads(cli("-q", "evaluate", str(bundle), *args, "--out", str(tmp_path / "o"), hide_gpu=True).stdout)
    assert abs(onnx["noiseless"]["onnx-fp32"] - on_cpu["noiseless"]) <= 0.01
    for ch, curve in on_cpu["curves"].items():
        for snr, acc in curve.items():
            assert abs(acc - onnx["curves"]["onnx-fp32"][ch][snr]) <= 0.1, (ch, snr)
    cli("-q", "prune", str(run), "--out", str(tmp_path / "pruned"), "--epochs", "1", "--ratio", "0.3", hide_gpu=True)
    pruned = json.loads(
        cli("-q", "prune", str(run), "--out", str(tmp_path / "pruned-gpu"), "--epochs", "1", "--device", "cuda").stdout
    )
    assert pruned["after"]["encoder_params"] < pruned["before"]["encoder_params"]

"""Where a training step's time goes on one GPU (issue 10), measured side by side in one process.

    python benchmarks/gpu_step.py --run RUN     (RUN: a run folder's system.json and genotype.json)

For the run's student and codec, with random data of the preset's shapes (speed only, no accuracy):
1. what the host pays per kernel launch, per synchronisation and per small host-to-device copy, and
   small CPU tensor work with the default thread count against one thread;
2. a stage-1 step (encoder, classifier, projector; CE + KD + feature losses, clipping, AdamW) eager in
   float32, eager under bf16 autocast, and captured whole in a CUDA graph and replayed;
3. a stage-2 step (every length each step, AWGN and Rayleigh, noise from a device generator) eager and
   as a CUDA graph;
4. the teacher's step (cnn-base) eager and as a CUDA graph, and a KDL-DARTS supernet step (the run's
   search settings) eager, with its validation pass over 6,000 images;
5. the evaluation's link (tx, channel, rx, decision on a batch of 512) with the channel on the host (as
   ``rkd-edge evaluate`` runs it) and on the device;
6. ``torch.compile`` of the stage-1 step (compile seconds and step time), last, while under ``--budget-s``.

Writes ``benchmarks/results/gpu_step-<device>.json`` and ``.md``; ``--device cpu`` is a dry run of the
eager parts that writes nothing. Without CUDA (and without ``--device cpu``) it exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import md_table, record  # noqa: E402

from rkd_edge.channel import create_channel  # noqa: E402
from rkd_edge.channel_ids import channel_id  # noqa: E402
from rkd_edge.distill.losses import feature_regression, kd_kl  # noqa: E402
from rkd_edge.nas.genotypes import Skeleton  # noqa: E402
from rkd_edge.nas.search_model import SearchNetwork  # noqa: E402
from rkd_edge.rundir import build_system  # noqa: E402
from rkd_edge.teachers import create_teacher  # noqa: E402

COMMAND = "python benchmarks/gpu_step.py --run RUN"
BATCH, EVAL_BATCH = 128, 512


def timed(fn, steps: int, device: str, warmup: int = 5) -> float:
    """Milliseconds per call of ``fn`` over ``steps`` calls after ``warmup`` (synchronised at both ends)."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return round((time.perf_counter() - t0) * 1e3 / steps, 4)


def graphed(step, generator: torch.Generator | None = None):
    """``step`` captured whole in a CUDA graph (after warm-up on a side stream; a custom ``generator`` the
    step draws from registered with it): returns its replay."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    if generator is not None:
        g.register_generator_state(generator)
    with torch.cuda.graph(g):
        step()
    return g.replay


def host_costs(device: str) -> dict:
    x = torch.zeros(16, device=device)
    out = {"tiny_kernel_us": round(timed(lambda: x.add_(1), 3000, device) * 1e3, 2)}
    if device == "cuda":
        out["synchronize_us"] = round(timed(torch.cuda.synchronize, 1000, device) * 1e3, 2)
        out["small_h2d_copy_us"] = round(timed(lambda: torch.tensor([1.0, 2.0], device=device), 1000, device) * 1e3, 2)
    n = torch.get_num_threads()
    small = lambda: torch.randn(EVAL_BATCH, 64, 2).mul_(2.0).sum()  # noqa: E731 - the evaluation's host channel scale
    out[f"cpu_small_op_us_{n}_threads"] = round(timed(small, 500, "cpu") * 1e3, 2)
    torch.set_num_threads(1)
    out["cpu_small_op_us_1_thread"] = round(timed(small, 500, "cpu") * 1e3, 2)
    torch.set_num_threads(n)
    return out


def train_step(model_fn, params, amp: bool = False, capturable: bool = False):
    """One training step over static inputs: forward (``model_fn() -> loss``), backward, clip, AdamW."""
    opt = torch.optim.AdamW(params, lr=1e-3, fused=params[0].is_cuda or None, capturable=capturable)

    def step():
        opt.zero_grad(set_to_none=not capturable)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = model_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()

    return step


def stage1_parts(run: Path, device: str):
    spec = json.loads((run / "system.json").read_text())
    system = build_system(spec, run).to(device).train()
    c, h, w = spec["input_shape"]
    x = torch.randn(BATCH, c, h, w, device=device)
    y = torch.randint(0, spec["num_classes"], (BATCH,), device=device)
    t_emb, t_logits = torch.randn(BATCH, spec["teacher_dim"], device=device), torch.randn(BATCH, 10, device=device)

    def loss1(model=system):
        out = model(x)
        return (
            F.cross_entropy(out["logits"], y)
            + kd_kl(out["logits"], t_logits, 4.0)
            + 0.5 * feature_regression(out["projected"], t_emb)
        )

    params1 = [p for n, p in system.named_parameters() if not n.startswith("codec.")]
    return system, x, y, loss1, params1


def stage2_loss(system, x, y, device: str):
    symbols = torch.tensor(system.codec.symbol_set, device=device)
    copies = len(symbols)
    channels = [create_channel("awgn"), create_channel("rayleigh")]
    g = torch.Generator(device=device).manual_seed(0)

    def loss2():
        n = len(x) * copies
        snr = -10.0 + 30.0 * torch.rand(n, generator=g, device=device)
        idx = torch.randint(0, len(channels), (n,), generator=g, device=device)
        out = system(x, channels, snr, symbols.repeat_interleave(len(x)), idx, generator=g, copies=copies)
        return F.cross_entropy(out["logits"], y.repeat(copies)) + F.mse_loss(out["f_hat"], out["f"].detach())

    return loss2, g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="folder with system.json and genotype.json")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--budget-s", type=float, default=120.0, help="start torch.compile only under this")
    args = ap.parse_args()
    device = args.device
    if args.steps < 2:
        print(f"error: --steps {args.steps}: time at least 2 steps", file=sys.stderr)
        sys.exit(2)
    if device == "cuda" and not torch.cuda.is_available():
        print("error: benchmarks/gpu_step.py needs a CUDA GPU and none is visible; use --device cpu for a dry run",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if not (args.run / "system.json").is_file():
        print(f"error: {args.run} has no system.json; pass a run folder (rkd-edge pipeline --out RUN)", file=sys.stderr)
        sys.exit(2)
    t_start, res = time.time(), {}
    cuda = device == "cuda"

    def part(name: str, fn) -> None:
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a result, not the end of the run
            traceback.print_exc()
            res[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        print(f"[{time.time() - t_start:.0f} s] {name}: {json.dumps(res[name])}", file=sys.stderr, flush=True)

    part("host", lambda: host_costs(device))
    steps = args.steps

    def stage1():
        system, x, y, loss1, params = stage1_parts(args.run, device)
        out = {"eager_fp32_ms": timed(train_step(loss1, params), steps, device)}
        if cuda:
            out["eager_bf16_ms"] = timed(train_step(loss1, params, amp=True), steps, device)
            out["graph_fp32_ms"] = timed(graphed(train_step(loss1, params, capturable=True)), steps, device)
        return out

    def stage2():
        system, x, y, _, _ = stage1_parts(args.run, device)
        loss2, g = stage2_loss(system, x, y, device)
        params = list(system.codec.parameters()) + list(system.classifier.parameters())
        out = {"eager_fp32_ms": timed(train_step(loss2, params), steps // 2, device)}
        if cuda:
            step = train_step(loss2, params, capturable=True)
            if hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
                out["graph_fp32_ms"] = timed(graphed(step, g), steps // 2, device)
            else:
                out["graph_fp32_ms"] = "this torch cannot capture a custom generator"
        return out

    def teacher():
        spec = json.loads((args.run / "system.json").read_text())
        t = create_teacher("cnn-base", tuple(spec["input_shape"]), 10).to(device).train()
        x = torch.randn(BATCH, *spec["input_shape"], device=device)
        y = torch.randint(0, 10, (BATCH,), device=device)

        def loss():
            return F.cross_entropy(t(x)[1], y)

        params = [p for p in t.parameters() if p.requires_grad]
        out = {"eager_fp32_ms": timed(train_step(loss, params), steps, device)}
        if cuda:
            out["graph_fp32_ms"] = timed(graphed(train_step(loss, params, capturable=True)), steps, device)
        return out

    def link():
        system, _, _, _, _ = stage1_parts(args.run, device)
        system.eval()
        spec = json.loads((args.run / "system.json").read_text())
        x = torch.randn(EVAL_BATCH, *spec["input_shape"], device=device)
        ch = create_channel("rayleigh")
        k = max(system.codec.symbol_set)
        s = torch.full((EVAL_BATCH,), 0.0, device=device)
        c = torch.full((EVAL_BATCH,), channel_id("rayleigh"), device=device)
        kk = torch.full((EVAL_BATCH,), k, device=device)
        with torch.no_grad():
            f = system.encoder(x)
            g_host, g_dev = torch.Generator().manual_seed(0), torch.Generator(device=device).manual_seed(0)

            def host():
                sym, mask = system.codec.tx(f, s, kk, c)
                o = ch(sym.cpu(), s.cpu(), mask.cpu(), g_host)
                return system.classifier(system.codec.rx(o.y.to(device), mask, s, c, o.csi.to(device))).argmax(-1).cpu()

            def dev():
                sym, mask = system.codec.tx(f, s, kk, c)
                o = ch(sym, s, mask, g_dev)
                return system.classifier(system.codec.rx(o.y, mask, s, c, o.csi)).argmax(-1).cpu()

            return {"host_channel_ms": timed(host, 100, device), "device_channel_ms": timed(dev, 100, device)}

    def supernet():
        cfg = json.loads((args.run / "config.json").read_text())["search"]
        spec = json.loads((args.run / "system.json").read_text())
        c, h, _ = spec["input_shape"]
        keys = ("layers", "steps", "init_channels", "stem_multiplier", "feature_dim", "stem_stride")
        sk = Skeleton(in_channels=c, image_size=h, num_classes=10, **{k: cfg[k] for k in keys})
        model = SearchNetwork(sk, cfg.get("partial_channels", 1)).to(device).train()
        x = torch.randn(cfg["batch_size"], c, h, h, device=device)
        y = torch.randint(0, 10, (len(x),), device=device)
        params = model.weight_parameters()
        out = {"eager_step_ms": timed(train_step(lambda: F.cross_entropy(model(x)[1], y), params), 20, device)}
        model.eval()
        xv = torch.randn(2048, c, h, h, device=device)
        with torch.no_grad():
            out["val_6000_images_ms"] = round(timed(lambda: model(xv), 3, device, warmup=1) * 6000 / 2048, 1)
        return out

    part("stage1", stage1)
    part("stage2", stage2)
    part("teacher", teacher)
    part("supernet", supernet)
    part("evaluate_link", link)

    def compiled():
        system, x, y, loss1, params = stage1_parts(args.run, device)
        model = torch.compile(system)
        t0 = time.time()
        step = train_step(lambda: loss1(model), params)
        step()
        if cuda:
            torch.cuda.synchronize()
        return {"compile_s": round(time.time() - t0, 1), "step_ms": timed(step, steps, device)}

    if time.time() - t_start < args.budget_s:
        part("stage1_compiled", compiled)
    res["seconds"] = round(time.time() - t_start, 1)
    if not cuda:
        print(json.dumps(res, indent=1))
        return
    name = re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(0).lower()).strip("-")
    rows = []
    for k, v in res.items():
        if isinstance(v, dict):
            rows += [[k, kk, vv] for kk, vv in v.items()]
    data = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": BATCH, "results": res}
    print(record(f"gpu_step-{name}", data, md_table(["part", "measure", "value"], rows), COMMAND))


if __name__ == "__main__":
    main()

"""The semantic system and its stages: batch independence, freeze lists, resume, power, DDP."""

import copy
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from rkd_edge.channel import active_power, create_channel
from rkd_edge.codec import CODECS, create_codec
from rkd_edge.codec.blocks import length_mask
from rkd_edge.config import CODEC_NAMES, StageConfig, load_config
from rkd_edge.distill.stages import run_stage
from rkd_edge.nas.genotypes import Genotype, Skeleton
from rkd_edge.rundir import build_system
from rkd_edge.students import create_encoder
from rkd_edge.system import SemanticSystem
from rkd_edge.system_spec import check_spec, system_spec


def small_genotype(c_in=1, size=8) -> Genotype:
    sk = Skeleton(c_in, size, 10, layers=2, steps=2, init_channels=4, feature_dim=16)
    cell = [("sep_conv_3x3", 0), ("skip_connect", 1), ("inv_res_3x3", 2), ("max_pool_3x3", 0)]
    return Genotype(cell, cell, sk, [2, 3], [2, 3])


def make_system(codec="cat", csi=False, gains=False, posterior=False, rx_per_length=False) -> SemanticSystem:
    torch.manual_seed(0)
    enc = create_encoder(small_genotype())
    kwargs = {"max_symbols": 8, "symbols": [2, 4, 8], "dim": 16, "heads": 2, "csi": csi} if codec == "cat" else {}
    if gains:
        kwargs["gains"] = True
    if posterior:
        kwargs["posterior_classes"] = 10
    if rx_per_length:
        kwargs["rx_per_length"] = True
    return SemanticSystem(enc, 10, 24, create_codec(codec, 16, **kwargs))


# Every codec of the registry, and the CAT codec's optional parts.
VARIANTS = [(c, {}) for c in CODECS] + [
    ("cat", {"gains": True}),
    ("cat", {"gains": True, "csi": True}),
    ("cat", {"gains": True, "posterior": True}),
    ("cat", {"gains": True, "rx_per_length": True}),
]


@pytest.mark.parametrize("codec,options", VARIANTS)
def test_every_codec_builds_and_runs(codec, options):
    system = make_system(codec, **options).eval()
    ch = create_channel("rayleigh")
    x = torch.randn(4, 1, 8, 8)
    k = torch.full((4,), system.codec.max_symbols)
    out = system(x, ch, torch.full((4,), 5.0), k, generator=torch.Generator().manual_seed(0))
    assert out["logits"].shape == (4, 10) and torch.isfinite(out["logits"]).all()
    torch.testing.assert_close(active_power(out["symbols"], out["mask"]), torch.ones(4))


@pytest.mark.parametrize(
    "codec,options",
    [(c, {"csi": c == "cat"}) for c in CODECS]
    + [("cat", {"gains": True}), ("cat", {"gains": True, "posterior": True})]
    + [("cat", {"rx_per_length": True})],
)
def test_sample_output_independent_of_batch(codec, options):
    system = make_system(codec, **options).eval()
    if options.get("gains"):  # trained gains are not 1: give them weights so that the test can fail
        codec = system.codec
        for layer in (codec.tx_gain, codec.rx_gain, codec.tx_cond.length, codec.rx_cond.length, codec.rx_cond.measured):
            torch.nn.init.normal_(layer.weight, std=0.3)
    torch.manual_seed(1)
    x = torch.randn(6, 1, 8, 8)
    snr = torch.linspace(-5, 15, 6)
    k = torch.tensor([2, 4, 8, 8, 4, 2]) if codec == "cat" else torch.full((6,), system.codec.max_symbols)
    with torch.no_grad():
        full = system(x, create_channel("identity"), snr, k)["logits"]
        other = torch.randn(6, 1, 8, 8) * 3
        for i in range(6):
            mixed = torch.cat([other[:i], x[i : i + 1], other[i + 1 :]])
            alone = system(mixed, create_channel("identity"), snr, k)["logits"][i]
            torch.testing.assert_close(alone, full[i], atol=1e-5, rtol=1e-5)


def test_gains_start_at_one():
    """An untrained codec with gains sends and restores exactly what it would without them: training
    starts from the plain linear code."""
    system = make_system(gains=True).eval()
    plain = copy.deepcopy(system)
    codec = plain.codec
    codec.tx_gain = codec.rx_gain = codec.tx_cond.length = codec.rx_cond.length = codec.rx_cond.measured = None
    x, snr, k = torch.randn(5, 1, 8, 8), torch.linspace(-10, 20, 5), torch.tensor([2, 4, 8, 8, 2])
    with torch.no_grad():
        a = system(x, create_channel("identity"), snr, k)
        b = plain(x, create_channel("identity"), snr, k)
    torch.testing.assert_close(a["symbols"], b["symbols"])
    torch.testing.assert_close(a["logits"], b["logits"])


def test_task_head_starts_from_the_classifier_and_moves_the_symbols():
    """The transmitter's task head is a copy of the classifier it is started from, and its posterior
    reaches the symbols (a head that fed nothing would leave them unchanged)."""
    system = make_system(gains=True, posterior=True).eval()
    codec = system.codec
    codec.start_task_head(system.classifier)
    torch.testing.assert_close(codec.tx_head.weight, system.classifier.weight)
    torch.testing.assert_close(codec.tx_head.bias, system.classifier.bias)
    f, snr, k, ch = torch.randn(4, 16), torch.zeros(4), torch.full((4,), 8), torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        before, _ = codec.tx(f, snr, k, ch)
        codec.tx_head.bias.add_(torch.arange(10.0))  # another posterior, same features
        after, _ = codec.tx(f, snr, k, ch)
    assert not torch.allclose(before, after)


def test_receiver_reads_each_length_with_its_own_map():
    """``rx_per_length``: the maps start equal (the codec starts as the shared one would), and a sample of
    length k is read by the map of the smallest trained length >= k, and only by it."""
    codec = make_system(rx_per_length=True).eval().codec  # trained lengths 2, 4, 8
    torch.testing.assert_close(codec.rx_lin_w[0], codec.rx_lin_w[2])
    k = torch.tensor([1, 2, 3, 4, 6, 8])
    y, mask = torch.randn(6, 8, 2), length_mask(k, 8)
    snr, ch = torch.zeros(6), torch.zeros(6, dtype=torch.long)
    with torch.no_grad():
        before = codec.rx(y, mask, snr, ch)
        codec.rx_lin_w[1].add_(1.0)  # the map of length 4: read by k = 3 and 4
        after = codec.rx(y, mask, snr, ch)
    changed = (before - after).abs().amax(-1) > 1e-4
    assert changed.tolist() == [False, False, True, True, False, False]


def test_copies_send_each_image_through_every_condition():
    """``copies``: the encoder runs once and each copy of the features gets its own SNR and k, as if
    sent alone (stage 2 with ``lengths: all``)."""
    system = make_system().eval()
    x = torch.randn(3, 1, 8, 8)
    snr, k = torch.tensor([0.0, 5.0, 10.0] * 2), torch.tensor([2, 2, 2, 8, 8, 8])
    with torch.no_grad():
        both = system(x, create_channel("identity"), snr, k, copies=2)
        for c in range(2):
            sel = slice(3 * c, 3 * c + 3)
            alone = system(x, create_channel("identity"), snr[sel], k[sel])
            torch.testing.assert_close(both["logits"][sel], alone["logits"])
    assert both["f"].shape == (6, 16) and both["mask"].sum(-1).tolist() == [2, 2, 2, 8, 8, 8]


@pytest.mark.parametrize("csi", ["zf", "decoder"])
def test_mixed_channel_batch_both_ways_give_each_sample_its_own_type(csi):
    """A batch of mixed channel types, sent the CPU way (each type's samples gathered) and the GPU way
    (every type sends the whole batch, each sample keeps its own): at 200 dB both return every sample
    through its own type (fading CSI where the sample is Rayleigh, h = 1 where it is AWGN)."""
    from rkd_edge.system import gathered, selected

    chans = [create_channel("awgn"), create_channel("rayleigh", csi=csi, mode="fast")]
    x, mask = torch.randn(64, 8, 2), length_mask(torch.randint(1, 9, (64,)), 8)
    x = x * mask.unsqueeze(-1)
    idx, snr = torch.randint(0, 2, (64,)), torch.full((64,), 200.0)
    a = gathered(chans, idx, x, snr, mask, torch.Generator().manual_seed(0))
    b = selected(chans, idx, x, snr, mask, torch.Generator().manual_seed(0))
    fading, one = idx == 1, torch.tensor([1.0, 0.0])  # h = 1 + 0j
    for out in (a, b):
        assert torch.all(out.csi[~fading] == one) and not torch.all(out.csi[fading] == one)
        if csi == "zf":  # equalised at the receiver (a CSI decoder gets the raw h * x)
            torch.testing.assert_close(out.y, x, atol=1e-4, rtol=0)
        torch.testing.assert_close(out.y[~fading], x[~fading], atol=1e-4, rtol=0)
    assert a.y.shape == b.y.shape == x.shape


def test_prefix_mask_and_power_over_active_symbols():
    system = make_system().eval()
    f = torch.randn(3, 16)
    sym, mask = system.codec.tx(f, torch.zeros(3), torch.tensor([2, 4, 8]), torch.zeros(3, dtype=torch.long))
    assert mask.sum(-1).tolist() == [2, 4, 8]
    assert torch.all(sym[mask == 0] == 0)
    torch.testing.assert_close(active_power(sym, mask), torch.ones(3))


@pytest.mark.parametrize("csi", [False, True])
def test_receiver_ignores_inactive_symbols(csi):
    """What arrives in slots beyond k (another user's symbols, noise) must not change the decoded features."""
    system = make_system(csi=csi).eval()
    k = torch.tensor([2, 4, 8])
    mask = length_mask(k, 8)
    y, h = torch.randn(3, 8, 2), torch.randn(3, 8, 2)
    junk = torch.randn(3, 8, 2) * 100 * (1 - mask).unsqueeze(-1)
    snr, ctype = torch.zeros(3), torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        a = system.codec.rx(y * mask.unsqueeze(-1), mask, snr, ctype, h)
        b = system.codec.rx(y * mask.unsqueeze(-1) + junk, mask, snr, ctype, h + junk)
    torch.testing.assert_close(a, b)


def test_csi_receiver_learns_to_undo_the_fading_phase():
    """With CSI at the decoder the receiver gets h x + n and h, and must undo a random phase per block.
    Trained briefly to pass features through block Rayleigh at 20 dB, the codec reconstructs them with an
    error far under their variance (a receiver that took (y, h) linearly stayed near it)."""
    from rkd_edge.channel_ids import CHANNEL_TYPES

    torch.manual_seed(0)
    codec = create_codec("cat", 8, max_symbols=8, symbols=[8], dim=16, depth=1, heads=2, csi=True)
    ch = create_channel("rayleigh", mode="block", csi="decoder")
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    n = 256
    k, snr = torch.full((n,), 8), torch.full((n,), 20.0)
    ctype = torch.full((n,), CHANNEL_TYPES.index("rayleigh"))

    def mse() -> torch.Tensor:
        f = torch.randn(n, 8, generator=g)
        x, mask = codec.tx(f, snr, k, ctype)
        o = ch(x, snr, mask, g)
        return (codec.rx(o.y, mask, snr, ctype, o.csi) - f).pow(2).mean()

    for _ in range(300):
        loss = mse()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert mse() < 0.5  # the features have variance 1; a receiver blind to the phase stays near 1.0


def _snapshot(system):
    return {n: p.detach().clone() for n, p in system.state_dict().items()}


def _in_groups(name: str, groups: list[str]) -> bool:
    for g in groups:
        if g in ("codec.tx", "codec.rx") and name.startswith(f"codec.{g[-2:]}_"):
            return True
        if g not in ("codec.tx", "codec.rx") and name.startswith(g + "."):
            return True
    return False


@pytest.mark.parametrize(
    "train,robust,lengths",
    [
        (["encoder", "classifier", "projector"], False, "draw"),
        (["codec", "classifier"], True, "draw"),
        (["codec", "classifier"], True, "all"),
        (["codec.rx"], True, "draw"),
        (["codec.tx", "encoder"], True, "all"),
    ],
)
def test_stage_changes_exactly_declared_parameters(digits, train, robust, lengths):
    system = make_system(gains=lengths == "all")
    before = _snapshot(system)
    sc = StageConfig(
        epochs=1,
        lr=1e-2,
        losses={"ce": 1.0, "recon": 1.0},
        train=train,
        limit_batches=3,
        channels=["awgn", "rayleigh"],
        lengths=lengths,
    )
    run_stage(
        "t",
        sc,
        system,
        digits,
        None,
        None,
        seed=0,
        batch_size=32,
        augment=False,
        device="cpu",
        codec_cfg=load_config("quickstart").codec if robust else None,
    )
    after = _snapshot(system)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    frozen_changed = [n for n in changed if not _in_groups(n, train)]
    assert not frozen_changed, f"frozen parameters or buffers changed: {frozen_changed[:5]}"
    for g in train:
        if g == "projector":  # no feature loss here: the projector gets no gradient
            continue
        assert any(_in_groups(n, [g]) for n in changed), f"declared group {g} did not change"


@pytest.mark.parametrize("data_augment", [False, True])
def test_a_stage_augments_as_its_own_setting_says(digits, data_augment):
    """``sc.augment`` overrides ``data.augment`` for its stage; unset, the stage follows the data section."""

    def trained(stage_augment: bool | None, data: bool) -> dict:
        system = make_system()
        sc = StageConfig(epochs=1, lr=1e-2, losses={"ce": 1.0}, train=["encoder", "classifier"], limit_batches=2)
        sc.augment = stage_augment
        run_stage("t", sc, system, digits, None, None, seed=0, batch_size=32, augment=data, device="cpu")
        return _snapshot(system)

    own = trained(not data_augment, data_augment)
    follows = trained(None, not data_augment)
    other = trained(None, data_augment)
    assert all(torch.equal(own[n], follows[n]) for n in own)
    assert any(not torch.equal(own[n], other[n]) for n in own)


def test_resume_matches_uninterrupted(digits, tmp_path):
    sc = StageConfig(
        epochs=3,
        lr=5e-3,
        losses={"ce": 1.0},
        train=["encoder", "codec", "classifier"],
        limit_batches=4,
        channels=["awgn", "rayleigh"],
    )
    cc = load_config("quickstart").codec
    kw = dict(seed=0, batch_size=32, augment=True, device="cpu", codec_cfg=cc)
    full = make_system()
    run_stage("s", sc, full, digits, None, None, checkpoint=tmp_path / "full.ckpt", **kw)
    part = make_system()
    short = copy.deepcopy(sc)
    short.epochs = 3
    ck = tmp_path / "part.ckpt"
    # interrupt after epoch 1: run 1 epoch of a 3-epoch schedule by raising inside the loop
    from rkd_edge.distill import loop

    real_fit = loop.fit

    def interrupted(model, opt, epochs, run_epoch, checkpoint=None, scheduler=None, desc="", select=None):
        def once(epoch):
            if epoch == 1:
                raise KeyboardInterrupt
            return run_epoch(epoch)

        return real_fit(model, opt, epochs, once, checkpoint, scheduler, desc, select)

    import rkd_edge.distill.stages as stages

    stages.fit = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stage("s", short, part, digits, None, None, checkpoint=ck, **kw)
    finally:
        stages.fit = real_fit
    resumed = make_system()
    run_stage("s", short, resumed, digits, None, None, checkpoint=ck, **kw)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=f"{n} differs after resume")


DDP_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys, torch
    from rkd_edge.data import create_dataset
    from rkd_edge.distill import ddp
    from rkd_edge.config import StageConfig
    from rkd_edge.distill.stages import run_stage
    sys.path.insert(0, os.environ["TESTS_DIR"])
    from test_system import make_system
    torch.set_num_threads(1)
    ddp.init_from_env("cpu")
    system = make_system()
    sc = StageConfig(epochs=3, lr=1e-2, losses={"ce": 1.0}, train=["encoder", "classifier"])
    hist = run_stage("ddp", sc, system, create_dataset("digits"), None, None, seed=0, batch_size=32,
                     augment=False, device="cpu")
    h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in system.parameters())).hexdigest()
    # One file per rank: two ranks printing to one pipe can interleave ("RESULTRESULT {...").
    result = {"rank": ddp.world()[0], "world": ddp.world()[1], "hash": h, "loss": [e["loss"] for e in hist]}
    with open(os.path.join(os.environ["RESULTS_DIR"], f"rank{ddp.world()[0]}.json"), "w") as f:
        json.dump(result, f)
""")


def test_ddp_two_processes_on_cpu(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "TESTS_DIR": os.path.dirname(__file__), "RESULTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    results = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1] and all(r["world"] == 2 for r in results)
    assert results[0]["hash"] == results[1]["hash"]  # replicas stay identical
    loss = results[0]["loss"]
    assert loss[-1] < loss[0]


def test_resumed_optimizer_keeps_its_own_step_mode():
    """A checkpoint written by an optimiser that was not capturable (an eager run) resumes into one that
    is (a run with cuda_graph): the flags and where the step counts live are this optimiser's, not the
    file's (otherwise the first graph capture fails)."""
    from rkd_edge.distill.loop import restore_optimizer

    w = torch.nn.Parameter(torch.randn(4))
    eager = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.ones(4)
    eager.step()
    saved = copy.deepcopy(eager.state_dict())
    graphed = torch.optim.AdamW([w], lr=0.1, capturable=True)
    restore_optimizer(graphed, saved)
    group = graphed.param_groups[0]
    assert group["capturable"] is True and group["fused"] is None
    step = graphed.state[w]["step"]
    assert step.dtype == torch.float32 and step.device == w.device and float(step) == 1.0
    back = torch.optim.AdamW([w], lr=0.1)
    restore_optimizer(back, graphed.state_dict())
    assert back.param_groups[0]["capturable"] is False


def test_equal_weights_save_to_equal_bytes(tmp_path):
    """Checkpoints are written through a temporary file; the bytes must not carry its random name, so a
    teacher retrained to the same weights keeps the same identity (its hash) and its cached outputs."""
    from rkd_edge.checkpoints import save_checkpoint

    state = make_system().state_dict()
    (tmp_path / "b").mkdir()
    save_checkpoint(tmp_path / "a.pt", state)
    save_checkpoint(tmp_path / "b" / "c.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "c.pt").read_bytes()


@pytest.mark.parametrize("method", ["rkd-sc", "authors-2025"])
@pytest.mark.parametrize("codec", list(CODECS))
def test_spec_check_accepts_what_the_pipeline_writes_for_every_codec(codec, method, tmp_path):
    """The system.json checker knows every registered codec and passes every spec the pipeline writes."""
    assert set(CODEC_NAMES) == set(CODECS)
    cfg = load_config("quickstart", None, [f"codec.name={codec}", f"method={method}"])
    spec = json.loads(json.dumps(system_spec(cfg, SimpleNamespace(num_classes=10, input_shape=(1, 8, 8)), 24)))
    small_genotype().save(tmp_path / "genotype.json")
    assert check_spec(spec, "system.json") is spec
    system = build_system(spec, tmp_path)
    assert system.codec.__class__ is CODECS[codec]

"""Channel conventions of DESIGN.md section 2, checked empirically over >= 1e6 symbols."""

import math

import pytest
import torch

from rkd_edge.channel import PowerNormalize, active_power, create_channel
from rkd_edge.channel.fading import cmul

N = 1000
K = 1000  # 1e6 symbols


def unit_symbols(seed=0):
    g = torch.Generator().manual_seed(seed)
    return PowerNormalize()(torch.randn(N, K, 2, generator=g))


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rician"])
@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 20.0])
def test_empirical_snr_within_0p1_db(name, snr_db):
    x = unit_symbols()
    ch = create_channel(name, mode="fast", csi="decoder", k_factor=2.0)
    out = ch(x, snr_db, generator=torch.Generator().manual_seed(1))
    signal = cmul(out.csi, x) if name != "awgn" else x
    noise = out.y - signal
    es = signal.pow(2).sum(-1).mean() if name == "awgn" else x.pow(2).sum(-1).mean()
    measured = 10 * math.log10(float(es / noise.pow(2).sum(-1).mean()))
    assert abs(measured - snr_db) < 0.1
    # noise is split equally between I and Q
    assert abs(float(noise[..., 0].var() / noise[..., 1].var()) - 1) < 0.02


@pytest.mark.parametrize("mode", ["block", "fast"])
def test_rayleigh_unit_gain_and_modes(mode):
    ch = create_channel("rayleigh", mode=mode, csi="decoder")
    h = ch.draw_h(
        4000 if mode == "block" else 1000,
        250 if mode == "block" else 1000,
        torch.Generator().manual_seed(2),
        torch.device("cpu"),
    )
    if mode == "block":
        assert torch.equal(h, h[:, :1].expand_as(h))  # one h per sample per transmission
        gains = h[:, 0].pow(2).sum(-1)
        assert abs(float(gains.mean()) - 1) < 0.05
    else:
        assert abs(float(h.pow(2).sum(-1).mean()) - 1) < 0.01
        assert float(h[:, 0].sub(h[:, 1]).abs().mean()) > 0.1  # varies per symbol


@pytest.mark.parametrize("k_factor", [1.0, 3.0, 10.0])
def test_rician_k_recovered(k_factor):
    ch = create_channel("rician", k_factor=k_factor, mode="fast", csi="decoder")
    h = ch.draw_h(1000, 1000, torch.Generator().manual_seed(3), torch.device("cpu")).reshape(-1, 2)
    assert abs(float(h.pow(2).sum(-1).mean()) - 1) < 0.01
    mean = h.mean(0)
    k_hat = float(mean.pow(2).sum() / (h - mean).pow(2).sum(-1).mean())
    assert abs(k_hat - k_factor) / k_factor < 0.03


def test_masked_power_normalisation():
    x = torch.randn(8, 16, 2) * 5
    k = torch.tensor([1, 2, 4, 8, 16, 3, 5, 16])
    mask = (torch.arange(16).view(1, -1) < k.view(-1, 1)).float()
    y = PowerNormalize()(x, mask)
    torch.testing.assert_close(active_power(y, mask), torch.ones(8))
    assert torch.all(y[mask == 0] == 0)
    # scaling one sample does not change another (per-sample normalisation)
    x2 = x.clone()
    x2[0] *= 100
    torch.testing.assert_close(PowerNormalize()(x2, mask)[1:], y[1:])


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "rician"])
def test_same_seed_same_noise(name):
    x = unit_symbols()[:10]
    ch = create_channel(name)
    a = ch(x, 5.0, generator=torch.Generator().manual_seed(7)).y
    b = ch(x, 5.0, generator=torch.Generator().manual_seed(7)).y
    c = ch(x, 5.0, generator=torch.Generator().manual_seed(8)).y
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("csi", ["zf", "mmse"])
def test_equalisation_recovers_symbols_at_high_snr(csi):
    x = unit_symbols()[:100]
    out = create_channel("rayleigh", csi=csi)(x, 60.0, generator=torch.Generator().manual_seed(0))
    assert float((out.y - x).abs().max()) < 0.05 or float((out.y - x).pow(2).mean()) < 1e-4


def test_identity_is_noiseless_and_masks():
    x = unit_symbols()[:4, :8]
    mask = torch.ones(4, 8)
    mask[:, 5:] = 0
    out = create_channel("identity")(x, None, mask)
    assert torch.equal(out.y[:, :5], x[:, :5]) and torch.all(out.y[:, 5:] == 0)


def test_per_sample_snr():
    x = unit_symbols()[:2]
    out = create_channel("awgn")(x, torch.tensor([0.0, 20.0]), generator=torch.Generator().manual_seed(0))
    p = (out.y - x).pow(2).sum(-1).mean(-1)
    assert 0.9 < float(p[0]) < 1.1 and 0.009 < float(p[1]) < 0.011


def test_unknown_channel_is_user_error():
    from rkd_edge.errors import UserError

    with pytest.raises(UserError, match="unknown channel"):
        create_channel("wifi")
    with pytest.raises(UserError, match="fading mode"):
        create_channel("rayleigh", mode="slow")

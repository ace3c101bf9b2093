"""KDL-DARTS: operations, genotypes, the penalty, derivation and the student built from a genotype."""

import json

import pytest
import torch

from rkd_edge.errors import UserError
from rkd_edge.nas.cost import count_macs, count_params, expected_cost, op_cost_table
from rkd_edge.nas.derive import derive, derive_cell, widen, widest_within
from rkd_edge.nas.genotypes import Genotype, Skeleton
from rkd_edge.nas.operations import PRIMITIVES, build_op
from rkd_edge.nas.search_model import SearchNetwork
from rkd_edge.students import create_encoder


@pytest.mark.parametrize("op", PRIMITIVES)
@pytest.mark.parametrize("size", [1, 2, 7, 8, 28, 224])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_forward_backward(op, size, stride):
    c = 4 if size == 224 else 8
    m = build_op(op, c, stride)
    x = torch.randn(2, c, size, size, requires_grad=True)
    y = m(x)
    assert y.shape == (2, c, -(-size // stride), -(-size // stride))
    y.square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("size,c_in", [(8, 1), (28, 1), (32, 3), (224, 3)])
def test_search_model_all_input_sizes(size, c_in):
    sk = Skeleton(c_in, size, 10, layers=3, steps=2, init_channels=4, feature_dim=16)
    f, logits = SearchNetwork(sk, partial_channels=2 if size == 32 else 1)(torch.randn(2, c_in, size, size))
    assert f.shape == (2, 16) and logits.shape == (2, 10)


def _skeleton(stem_stride=1, size=8):
    return Skeleton(1, size, 10, layers=3, steps=3, init_channels=8, feature_dim=32, stem_stride=stem_stride)


def test_lambda_lowers_expected_cost_after_a_step():
    sk = _skeleton()
    table = op_cost_table(sk, "params")
    reductions = [p["reduction"] for p in SearchNetwork(sk).plan]
    results = []
    for lam in (0.0, 1.0, 10.0):
        torch.manual_seed(0)
        model = SearchNetwork(sk)
        opt = torch.optim.Adam(model.arch_parameters(), lr=0.01)
        before = expected_cost(model.alphas_normal, model.alphas_reduce, table, reductions).item()
        x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
        loss = torch.nn.functional.cross_entropy(model(x)[1], y)
        loss = loss + lam * expected_cost(model.alphas_normal, model.alphas_reduce, table, reductions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        results.append(expected_cost(model.alphas_normal, model.alphas_reduce, table, reductions).item() - before)
    assert results[2] < results[1] < 0 and results[1] < results[0]


def _derived(seed=0, stem_stride=1, size=8) -> Genotype:
    torch.manual_seed(seed)
    sk = _skeleton(stem_stride, size)
    model = SearchNetwork(sk)
    with torch.no_grad():
        model.alphas_normal.normal_(0, 1)
        model.alphas_reduce.normal_(0, 1)
    tables = {"params": op_cost_table(sk, "params"), "flops": op_cost_table(sk, "flops")}
    return derive(model, 2, tables, [p["reduction"] for p in model.plan], {"lambda": 0.0})


@pytest.mark.parametrize("seed,stem_stride,size", [(0, 1, 8), (1, 1, 8), (2, 1, 8), (0, 2, 28), (1, 1, 13)])
def test_student_params_match_genotype_estimate(seed, stem_stride, size):
    g = _derived(seed, stem_stride, size)
    enc = create_encoder(g)
    assert count_params(enc) == g.encoder_params
    assert count_params(enc) + 32 * 10 + 10 == g.params
    assert count_macs(enc, (1, size, size)) == g.encoder_macs
    assert g.macs == g.encoder_macs + 32 * 10  # the classifier's, as params holds it
    assert enc(torch.randn(3, 1, size, size)).shape == (3, 32)
    assert type(enc).__name__ != "SearchNetwork"


@pytest.mark.parametrize("channels", [4, 8, 12])
def test_widened_genotype_counts_what_it_builds(channels):
    """search.derive_channels: the same cells at another width; its counts are the built encoder's (at the
    searched width they equal the search's table estimate, so the two ways of counting agree)."""
    g = _derived(1)
    wide = widen(g, channels)
    enc = create_encoder(wide)
    assert wide.normal == g.normal and wide.reduce == g.reduce and wide.skeleton.init_channels == channels
    assert count_params(enc) == wide.encoder_params and count_macs(enc, (1, 8, 8)) == wide.encoder_macs
    assert wide.search["searched_channels"] == 8
    if channels == 8:
        assert (wide.params, wide.macs) == (g.params, g.macs)
    else:
        assert (wide.params > g.params) == (channels > 8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_widest_within_a_budget(seed):
    """search.derive_max_params: the widest build of the cells that fits, wherever the budget falls."""
    g = _derived(seed)
    assert widest_within(g, g.params) is g  # the searched width itself keeps the search's genotype
    for budget in (g.params - 1, g.params + 1, 3 * g.params, 40 * g.params):
        fit = widest_within(g, budget)
        width = fit.skeleton.init_channels
        assert (fit.normal, fit.reduce) == (g.normal, g.reduce)
        assert fit.params <= budget < widen(g, width + 1).params
        assert count_params(create_encoder(fit)) == fit.encoder_params
    with pytest.raises(UserError, match="one channel wide"):
        widest_within(g, widen(g, 1).params - 1)


def test_genotype_json_round_trip(tmp_path):
    g = _derived()
    path = g.save(tmp_path / "genotype.json")
    again = Genotype.load(path)
    assert again.to_dict() == g.to_dict()
    text = path.read_text()
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"  # stable, diffable


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d.update(format="other"), "not an rkd-edge genotype"),
        (lambda d: d["normal"].__setitem__(0, ["conv_99x99", 0]), "unknown operation"),
        (lambda d: d["normal"].__setitem__(0, ["skip_connect", 7]), "does not exist"),
        (lambda d: d.pop("skeleton"), "malformed"),
    ],
)
def test_bad_genotype_one_line(tmp_path, mutate, needle):
    d = _derived().to_dict()
    mutate(d)
    (tmp_path / "g.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match=needle) as exc:
        Genotype.load(tmp_path / "g.json")
    assert "\n" not in str(exc.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        Genotype.load(tmp_path / "bad.json")


def test_safeguards_act():
    """Weights that favour none and skip everywhere: none is never derived, skips are capped."""
    alphas = torch.zeros(9, len(PRIMITIVES))
    alphas[:, PRIMITIVES.index("none")] = 5.0
    alphas[:, PRIMITIVES.index("skip_connect")] = 3.0
    cell, info = derive_cell(alphas, 3, max_skip=2)
    ops = [op for op, _ in cell]
    assert "none" not in ops
    assert ops.count("skip_connect") == 2
    assert info["skips_replaced"] == 4 and info["none_argmax"] == 9
    uncapped, _ = derive_cell(alphas, 3, max_skip=None)
    assert [op for op, _ in uncapped].count("skip_connect") == 6


@pytest.mark.parametrize("second_order", [False, True])
def test_a_one_cell_search_steps_without_a_reduction_cell(second_order):
    """search.layers=1 has no reduction cell: its alphas take no part (autograd refused them unused)."""
    from rkd_edge.nas.architect import Architect

    sk = Skeleton(1, 8, 10, layers=1, steps=2, init_channels=4, feature_dim=16)
    torch.manual_seed(0)
    model = SearchNetwork(sk)
    assert not any(p["reduction"] for p in model.plan)
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))

    def loss_fn(b):
        return torch.nn.functional.cross_entropy(model(b[0])[1], b[1])

    arch = Architect(model, loss_fn, lambda: 0 * model.alphas_normal.sum(), lam=0.0, lr=0.01, second_order=second_order)
    before = [a.detach().clone() for a in model.arch_parameters()]
    value = arch.step(batch, batch)
    assert torch.isfinite(value) and not torch.equal(before[0], model.alphas_normal)
    assert torch.isfinite(model.alphas_reduce).all()


@pytest.mark.parametrize("layers,steps,channels,partial", [(3, 3, 8, 1), (5, 4, 16, 2), (1, 2, 4, 1), (8, 2, 8, 4)])
def test_the_preflight_counts_a_supernet_as_built(layers, steps, channels, partial):
    """Counted one distinct cell at a time on the meta device, equal to the network built whole."""
    from rkd_edge.preflight import supernet_params

    sk = Skeleton(1, 8, 10, layers=layers, steps=steps, init_channels=channels, feature_dim=16)
    assert supernet_params(sk, partial) == count_params(SearchNetwork(sk, partial))


def test_a_genotype_written_with_flops_reads_them_as_the_encoders_macs():
    """Genotypes before the name said MACs hold the encoder's multiply-accumulates as ``flops``."""
    g = _derived()
    old = g.to_dict()
    old["flops"] = old.pop("encoder_macs")
    del old["macs"]
    again = Genotype.from_dict(old)
    assert (again.encoder_macs, again.macs) == (g.encoder_macs, g.macs)

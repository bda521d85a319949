"""The SI pair search with pair_search_precision "tf32_rerank" (bench.methods.si.data_pairs): candidates from a
low-precision product within a provable error bound, the partners decided by the fp32 search's own arithmetic, so
that they are the fp32 search's, near-ties included. On the CPU the product is a stand-in of TF32's precision (the
operands cut to 10 mantissa bits, truncated as tensor cores may do, the products summed in fp32) or of bfloat16's."""

import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import REPO
from helpers import cpu_context, separable

from bench import BenchError
from bench.methods import si
from bench.models import build_model
from bench.schema import check

CPU = torch.device("cpu")
MIB = 2**-20  # budgets in MiB, as the option gives them: n * MIB is n bytes
RUN = {  # a tiny si_forward run (tests/test_method_si.py's)
    "epochs": 1,
    "lr": 0.01,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 16,
    "lr_milestones": [],
    "lr_gamma": 0.1,
    "eval_batch_size": 32,
    "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3},
    "augment": {"crop_padding": 0, "hflip": False},
    "experiment": "test-si",
}


def ten_bits(x: torch.Tensor) -> torch.Tensor:
    """x with 10 of fp32's 23 mantissa bits, the others dropped: a relative error below 2^-10, as TF32's."""
    return (x.contiguous().view(torch.int32) & ~0x1FFF).view(torch.float32)


TF32_LIKE = si.Rerank(lambda a, c: ten_bits(a) @ ten_bits(c).t(), 2.0**-10)
BF16 = si.Rerank(lambda a, c: a.bfloat16().float() @ c.bfloat16().float().t(), 2.0**-8)  # rounded to nearest
PRODUCTS = pytest.mark.parametrize("rerank", [TF32_LIKE, BF16], ids=["ten_bits", "bf16"])


def near_ties(dims: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random points and their near-ties: duplicates (exact ties: the first index), points one ulp off in every
    coordinate, and pairs at the same distance from a point (x + v, x - v); half of the ties of the same label as
    their point (positive partners), half of another (negative ones); and points at 100 times the scale."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(16, dims, generator=g)
    v = 1e-3 * torch.randn(4, dims, generator=g)
    ulp_off = torch.nextafter(base[4:8], torch.full_like(base[4:8], math.inf))
    z = torch.cat([base, base[:4], ulp_off, base[8:12] + v, base[8:12] - v, 100 * base[12:16]])
    lab = torch.arange(16) % 2
    ties = torch.cat([lab[:2], 1 - lab[2:4], lab[4:6], 1 - lab[6:8], lab[8:10], 1 - lab[10:12]])
    labels = torch.cat([lab, ties[:4], ties[4:8], ties[8:12], ties[8:12], lab[12:16]])
    return z, labels


def search(z, labels, rerank=None, chunk=None, **kw):
    chunk = chunk or len(z)
    chunks = [(z[i : i + chunk], labels[i : i + chunk]) for i in range(0, len(z), chunk)]
    stats = {}
    pos, neg = si.data_pairs(lambda: iter(chunks), CPU, rerank=rerank, stats=stats, **kw)
    return (pos.tolist(), neg.tolist()), stats


@PRODUCTS
@pytest.mark.parametrize("dims", [1, 7, 300])
def test_the_bound_holds_and_is_not_loose_by_orders(rerank, dims):
    """|approximate - fp32 distance| <= rerank_bound for norms over six decades, near and far pairs; and the
    worst pair uses a good part of it."""
    g = torch.Generator().manual_seed(dims)
    a = torch.randn(40, dims, generator=g) * torch.logspace(-3, 3, 40)[:, None]
    c = torch.cat([a[:20] * (1 + 1e-3 * torch.randn(20, dims, generator=g)), torch.randn(20, dims, generator=g)])
    sq_a, sq_c = (a * a).sum(dim=1), (c * c).sum(dim=1)
    fp32 = (sq_a[:, None] + sq_c[None, :] - 2.0 * (a @ c.t())).clamp_min(0.0)
    approx = (sq_a[:, None] + sq_c[None, :] - 2.0 * rerank.matmul(a, c)).clamp_min(0.0)
    share = (approx - fp32).abs() / si.rerank_bound(sq_a, sq_c, dims, rerank)
    assert share.max() <= 1 / rerank.safety  # within the bound before its safety factor
    if dims == 1:  # one product: the operands' rounding, not the sums, and the bound is near it
        assert share.max() > 0.1


@PRODUCTS
@pytest.mark.parametrize("rows,cols", [(4096, 4096), (7, 5), (1, 3)])
@pytest.mark.parametrize("dims", [8, 64])
def test_the_partners_are_the_fp32_searchs(rerank, rows, cols, dims):
    z, labels = near_ties(dims)
    expected, _ = search(z, labels, block_rows=rows, block_cols=cols)
    got, stats = search(z, labels, rerank, block_rows=rows, block_cols=cols)
    assert got == expected
    assert expected[0][16] == 0 and expected[0][17] == 1  # the duplicates' positive partners: their originals
    assert stats["rerank_candidates"] >= 2 * len(z)  # every point has both partners: at least one candidate each
    assert 0 < stats["fp32_tiles"] <= stats["tiles"]


BLOCKS = {"block_rows": 16, "block_cols": 16}  # one step at 64 dimensions: 11,136 bytes (si._step_bytes)


@pytest.mark.parametrize(
    "device_bytes,host_bytes,mode",
    [(1e9, 0, "held"), (23000, 1e9, "held"), (30000, 0, "streamed"), (23000, 0, "streamed")],
)
def test_every_mode_finds_the_same_partners(device_bytes, host_bytes, mode):
    """97 points of 64 dimensions read in chunks of 8 under the tiny budgets of the fp32 search's own tests: held
    (on the device, or spilled to the host) the search is re-ranked; streamed, it is the fp32 search."""
    z, labels = near_ties(64)
    g = torch.Generator().manual_seed(1)
    z = torch.cat([z, torch.randn(97 - len(z), 64, generator=g)])
    labels = torch.cat([labels, torch.randint(0, 2, (97 - len(labels),), generator=g)])
    expected, _ = search(z, labels, **BLOCKS)
    got, stats = search(z, labels, TF32_LIKE, 8, max_mb=device_bytes * MIB, host_mb=host_bytes * MIB, **BLOCKS)
    assert stats["mode"] == mode and (stats["block_rows"], stats["block_cols"]) == (16, 16)
    assert got == expected
    assert ("rerank_candidates" in stats) == (mode == "held")
    assert (stats["fp32_tiles"] == stats["tiles"]) == (mode == "streamed")  # held: some tiles never in fp32


def test_without_the_bound_the_candidates_miss_the_nearest():
    """Point 0 (x = 1): point 2 (1 - 2^-12, distance 2^-24) is nearer than point 1 (1 + 2^-10, distance 2^-20),
    but cut to 10 bits it is 1 - 2^-11, at an approximate distance near 2^-11, while point 1 is exact: with the
    bound at 0 point 1 is the only candidate, with the bound both are, and fp32 decides."""
    z = torch.tensor([[1.0], [1.0 + 2**-10], [1.0 - 2**-12]])
    labels = torch.tensor([0, 0, 0])
    for blocks in ({}, {"block_rows": 1, "block_cols": 1}):
        assert search(z, labels, **blocks)[0][0][0] == 2
        assert search(z, labels, TF32_LIKE._replace(safety=0.0), **blocks)[0][0][0] == 1
        assert search(z, labels, TF32_LIKE, **blocks)[0][0][0] == 2


def tf32_switch():
    switch = torch.backends.cuda.matmul
    return switch.fp32_precision if getattr(switch, "fp32_precision", None) is not None else switch.allow_tf32


class Probe(torch.Tensor):
    """A tensor that records the TF32 switch at every matrix product it is in."""

    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("matmul", "__matmul__"):
            cls.seen.append(tf32_switch())
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tf32_is_allowed_for_the_search_product_only():
    before, on = tf32_switch(), "tf32" if isinstance(tf32_switch(), str) else True
    assert before != on  # the suite runs fp32 products
    Probe.seen = []
    a, c = torch.randn(3, 4), torch.randn(5, 4)
    assert torch.equal(si.tf32_matmul(a.as_subclass(Probe), c).as_subclass(torch.Tensor), a @ c.t())  # CPU: fp32
    assert Probe.seen == [on]
    assert tf32_switch() == before
    with pytest.raises(RuntimeError):
        si.tf32_matmul(a, torch.randn(5, 3))
    assert tf32_switch() == before  # restored when the product fails too


def test_the_option_reaches_the_search_and_the_metrics(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown pair_search_precision 'tf16' \(fp32, tf32_rerank\)"):
        si.check_si_options({**si.DEFAULTS, "pair_search_precision": "tf16"}, "si_forward")
    z, labels = near_ties()
    run = SimpleNamespace(device=CPU, epoch=0)
    feats = SimpleNamespace(in_order=lambda: iter([(z, labels)]))
    monkeypatch.setattr(si, "TF32_RERANK", TF32_LIKE)  # read when the search starts
    found = {}
    for precision in si.PAIR_SEARCH_PRECISIONS:
        opts = si.check_si_options({**si.DEFAULTS, "pair_search_precision": precision}, "si_forward")
        pairs = {}
        embed = si.embedding(torch.nn.Identity(), False)
        si.search_pairs(run, feats, torch.nn.Identity(), embed, 0, opts, pairs)
        found[precision] = (pairs["pos"].tolist(), pairs["neg"].tolist(), si.si_metrics({}, None, pairs))
    assert found["fp32"][:2] == found["tf32_rerank"][:2]
    assert "pair_search_rerank_candidates" not in found["fp32"][2]
    metrics = found["tf32_rerank"][2]
    assert metrics["pair_search_rerank_candidates"] >= 2 * len(z)
    assert 0 < metrics["pair_search_rerank_fp32_share"] <= 1


def test_a_run_with_tf32_rerank_trains_the_fp32_runs_model(monkeypatch):
    """si_forward with the re-ranked search (the CPU stand-in product) and without: the same partners, so exactly
    the same weights; the re-ranked run reports its candidates and its fp32 share."""
    monkeypatch.setattr(si, "TF32_RERANK", TF32_LIKE)
    data = separable(n_train=48, n_test=16)
    runs = {}
    for precision in si.PAIR_SEARCH_PRECISIONS:
        options = {"epochs_per_layer": 1, "classifier_epochs": 1, "si_eval_samples": 0, "normalize_features": True}
        cfg = {
            **RUN,
            "method_options": {**options, "neighbours": "data", "pair_search_precision": precision},
        }
        torch.manual_seed(0)
        model = build_model({"base": "lenet"}, 3, 4, 16, {"bn": True, "width_mult": 0.5})
        runs[precision] = (si.train(model, data, cfg, cpu_context()), model.state_dict())
    (fp32, fp32_weights), (reranked, reranked_weights) = runs["fp32"], runs["tf32_rerank"]
    assert all(torch.equal(fp32_weights[k], reranked_weights[k]) for k in fp32_weights)
    assert "pair_search_rerank_candidates" not in fp32
    assert reranked["pair_search_rerank_candidates"] >= 2 * 48 * len(model.blocks)  # both partners, every layer
    assert 0 < reranked["pair_search_rerank_fp32_share"] <= 1


def test_a_grid_may_set_the_precision():
    path = REPO / "bench" / "grids" / "karimi.yaml"
    with open(path, encoding="utf-8") as f:
        grid = yaml.safe_load(f)
    options = next(s["set"]["method_options"] for s in grid["settings"] if "method_options" in s.get("set", {}))
    options["pair_search_precision"] = "tf32_rerank"
    check(grid, "grid", path)
    options["pair_search_precision"] = "tf16"
    with pytest.raises(BenchError, match="pair_search_precision: 'tf16' is not one of"):
        check(grid, "grid", path)

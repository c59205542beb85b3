"""Fused linear + cross-entropy: against the unfused fp32 definition (ignored tokens, chunk
remainders, uniform and arbitrary upstream gradients, eval without gradients), the Triton and torch
row passes against each other, and the vocab-parallel split over two gloo ranks against one rank."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron_infi.kernels.cross_entropy import IGNORE_INDEX, cross_entropy_reference, linear_cross_entropy
from megatron_infi.kernels.cross_entropy import IMPLS as IMPLS_BY_NAME
from tests.kernels._util import CE_TOL, DTYPES, assert_close_rel, device

IMPLS = ["torch", "triton"]


def _problem(n, h, v, dtype, dev, seed=0, ignored=(3, 10)):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).to(dev, dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5 * 4).to(dev, dtype)
    labels = torch.randint(0, v, (n,), generator=gen)
    labels[[i for i in ignored if i < n]] = IGNORE_INDEX
    return hidden, weight, labels.to(dev)


def _reference(hidden, weight, labels, upstream):
    h32 = hidden.detach().float().requires_grad_()
    w32 = weight.detach().float().requires_grad_()
    loss = cross_entropy_reference(h32, w32, labels)
    loss.backward(upstream)
    return loss, h32.grad, w32.grad


def _check(impl, dtype, dev, n=37, h=32, v=300, chunk=16, upstream="uniform"):
    hidden, weight, labels = _problem(n, h, v, dtype, dev)
    gen = torch.Generator().manual_seed(5)
    g = {
        "uniform": torch.full((n,), 0.25),
        "masked": (torch.rand(n, generator=gen) > 0.3).float() / n,  # a masked mean
        "arbitrary": torch.rand(n, generator=gen) - 0.5,
    }[upstream].to(dev)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, labels, impl=impl, chunk=chunk)
    loss.backward(g)
    ref_loss, ref_dh, ref_dw = _reference(hidden, weight, labels, g)
    tol = CE_TOL[dtype]
    assert loss.dtype == torch.float32
    assert (loss[labels == IGNORE_INDEX] == 0).all()
    assert_close_rel(loss, ref_loss, tol, "loss")
    assert_close_rel(h.grad, ref_dh, tol, "d_hidden")
    assert_close_rel(w.grad, ref_dw, tol, "d_weight")


@pytest.mark.parametrize("upstream", ["uniform", "masked", "arbitrary"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl", IMPLS)
def test_matches_reference(impl, dtype, upstream):
    _check(impl, dtype, torch.device("cpu"), upstream=upstream)


@pytest.mark.parametrize("chunk", [1, 37, None])
def test_chunking_does_not_change_the_result(chunk):
    _check("torch", torch.float32, torch.device("cpu"), chunk=chunk, upstream="arbitrary")


def test_triton_and_torch_row_passes_agree():
    hidden, weight, labels = _problem(29, 16, 1000, torch.float32, torch.device("cpu"))
    out = {}
    for impl in IMPLS:
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = linear_cross_entropy(h, w, labels, impl=impl, chunk=8)
        loss.sum().backward()
        out[impl] = (loss, h.grad, w.grad)
    for a, b in zip(out["torch"], out["triton"], strict=True):
        assert_close_rel(b, a, 1e-5)


def test_eval_computes_no_gradients(monkeypatch):
    hidden, weight, labels = _problem(12, 16, 64, torch.float32, torch.device("cpu"))
    hidden.requires_grad_()
    passes = []
    monkeypatch.setitem(IMPLS_BY_NAME, "torch", (IMPLS_BY_NAME["torch"][0], lambda *a: passes.append(a)))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, impl="torch")
    assert loss.grad_fn is None
    assert not passes, "no gradient pass in evaluation"
    assert_close_rel(loss, cross_entropy_reference(hidden.detach(), weight, labels), 1e-5)


def test_only_hidden_requires_grad():
    hidden, weight, labels = _problem(12, 16, 64, torch.float32, torch.device("cpu"))
    h = hidden.clone().requires_grad_()
    linear_cross_entropy(h, weight, labels, impl="triton").sum().backward()
    _, ref_dh, _ = _reference(hidden, weight, labels, torch.ones(12))
    assert_close_rel(h.grad, ref_dh, 1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_triton_row_loops_over_several_vocabulary_blocks(monkeypatch, dtype):
    """CPU vocabularies fit one BLOCK_V; a small block makes the row passes loop (300 = 4 x 64 + 44),
    at the model's hidden size of 2048."""
    from megatron_infi.kernels import cross_entropy

    monkeypatch.setattr(cross_entropy, "BLOCK_V", 64)
    _check("triton", dtype, torch.device("cpu"), n=24, h=2048, v=300, chunk=16, upstream="arbitrary")


def test_all_tokens_ignored():
    hidden, weight, labels = _problem(6, 16, 64, torch.float32, torch.device("cpu"))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy(h, w, torch.full_like(labels, IGNORE_INDEX), impl="torch")
    loss.sum().backward()
    assert not loss.any() and not h.grad.any() and not w.grad.any()


@pytest.mark.parametrize("shared_with_embedding", [False, True], ids=["own", "shared"])
def test_weight_grad_goes_into_ddp_main_grad(shared_with_embedding):
    """megatron-core's fused-wgrad protocol: the gradient is added to the fp32 `main_grad`, and the
    parameter gets a placeholder DDP's hook skips (`grad_added_to_main_grad`) or, for a weight the
    embedding also uses (`zero_out_wgrad`), nothing, so that only the embedding's gradient is added."""
    hidden, weight, labels = _problem(37, 32, 300, torch.float32, torch.device("cpu"))
    upstream = torch.rand(37, generator=torch.Generator().manual_seed(5)) - 0.5
    w = weight.clone().requires_grad_()
    w.main_grad = torch.ones(w.shape)
    w.grad_added_to_main_grad = False
    if shared_with_embedding:
        w.zero_out_wgrad = True
    linear_cross_entropy(hidden, w, labels, impl="torch", chunk=16).backward(upstream)
    _, _, ref_dw = _reference(hidden, weight, labels, upstream)
    assert_close_rel(w.main_grad, 1 + ref_dw, 1e-6, "main_grad")
    assert w.grad_added_to_main_grad
    assert (w.grad is None) is shared_with_embedding


def test_shape_errors():
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 8), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="hidden"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(10, 7), torch.zeros(4, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("upstream", ["masked", "arbitrary"])
def test_matches_reference_gpu(dtype, upstream):
    _check("triton", dtype, device(), n=4096, h=2048, v=128256 // 8, chunk=None, upstream=upstream)
    _check("triton", dtype, device(), n=1000, h=512, v=5000, chunk=256, upstream=upstream)


# --- tensor-parallel vocabulary split on gloo -------------------------------------------------

WORLD = 2
N, H = 33, 16
# fp32 with even shards; bf16 with an odd number of rows per shard (2 x 101)
TP_CASES = {"fp32": (torch.float32, 200), "bf16": (torch.bfloat16, 202)}


def _tp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        for impl in IMPLS:
            for name, (dtype, vocab) in TP_CASES.items():
                _tp_rank_run(rank, impl, dtype, vocab, f"{out_dir}/{impl}_{name}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _tp_rank_run(rank: int, impl: str, dtype: torch.dtype, vocab: int, out_file: str) -> None:
    hidden, weight, labels = _problem(N, H, vocab, dtype, torch.device("cpu"))
    upstream = torch.rand(N, generator=torch.Generator().manual_seed(9))
    shard = weight.chunk(WORLD)[rank].clone().requires_grad_()
    h = hidden.clone().requires_grad_()
    loss = linear_cross_entropy(
        h, shard, labels, group=dist.group.WORLD, vocab_start=rank * shard.shape[0], impl=impl, chunk=8
    )
    loss.backward(upstream)
    d_hidden = h.grad.float()
    dist.all_reduce(d_hidden)  # what megatron's copy_to_tensor_model_parallel_region does in backward
    torch.save({"loss": loss.detach(), "d_hidden": d_hidden, "d_shard": shard.grad}, out_file)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("tp2")
    mp.start_processes(_tp_worker, args=(str(out / "init"), str(out)), nprocs=WORLD, start_method="spawn")
    return out


@pytest.mark.dist
@pytest.mark.parametrize("case", sorted(TP_CASES))
@pytest.mark.parametrize("impl", IMPLS)
def test_vocab_parallel_two_ranks_match_one(two_rank_results, impl, case):
    dtype, vocab = TP_CASES[case]
    hidden, weight, labels = _problem(N, H, vocab, dtype, torch.device("cpu"))
    upstream = torch.rand(N, generator=torch.Generator().manual_seed(9))
    if dtype == torch.float32:  # the single-rank fused result, to fp32 rounding
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = linear_cross_entropy(h, w, labels, impl=impl)
        loss.backward(upstream)
        expected, tol = (loss.detach(), h.grad, w.grad), {"loss": 1e-6, "grad": 1e-5}
    else:  # the fp32 definition, to bf16 rounding
        expected, tol = (
            _reference(hidden, weight, labels, upstream),
            {"loss": CE_TOL[dtype], "grad": CE_TOL[dtype]},
        )
    ranks = [torch.load(two_rank_results / f"{impl}_{case}_{r}.pt") for r in range(WORLD)]
    for r in ranks:
        assert_close_rel(r["loss"], expected[0].detach(), tol["loss"], "loss")
        assert_close_rel(r["d_hidden"], expected[1], tol["grad"], "d_hidden")
    assert_close_rel(torch.cat([r["d_shard"] for r in ranks]), expected[2], tol["grad"], "d_weight")

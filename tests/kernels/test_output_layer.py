"""The fused output layer + loss inside the model and megatron-core DDP: the trainer's loss mask keeps
masked tokens out of the logits GEMMs (and out of any backward recomputation) without changing a
gradient, and the output weight's gradient reaches DDP's fp32 main_grad unrounded, tied or not."""

from __future__ import annotations

import pytest
import torch

from megatron_infi.config.core import from_dict
from megatron_infi.config.schema import TrainConfig
from megatron_infi.kernels import cross_entropy
from tests.kernels._util import assert_close_rel

VOCAB, B, S = 512, 2, 16

# CPU-side checks (the torch row passes); on a GPU the same code runs in test_model_gpu.py.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-side check")


def _model(precision: str, tie_embeddings: bool = True, seed: int = 5):
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    from megatron_infi.models.gpt import build_model
    from megatron_infi.training.distributed import init_model_parallel

    init_model_parallel(1, 1, seed=seed)
    model = {
        "preset": "tiny", "vocab_size": VOCAB, "num_layers": 2, "hidden_size": 64, "ffn_hidden_size": 128,
        "num_attention_heads": 4, "num_query_groups": 2, "kernels": "torch", "tie_embeddings": tie_embeddings,
    }  # fmt: skip
    cfg = from_dict(TrainConfig, TrainConfig.preprocess({"model": model, "train": {"precision": precision}}))
    torch.manual_seed(seed)
    model_parallel_cuda_manual_seed(seed)
    (chunk,), tconfig = build_model(cfg)
    return chunk, tconfig


def _batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    loss_mask = (torch.rand(B, S, generator=gen) > 0.4).float()
    loss_mask[0, 0] = 1.0
    return {
        # distinct tokens: each embedding row gets one token's gradient, exact in any dtype
        "tokens": torch.randperm(VOCAB, generator=gen)[: B * S].view(B, S),
        "labels": torch.randint(0, VOCAB, (B, S), generator=gen),
        "position_ids": torch.arange(S)[None].expand(B, S),
        "loss_mask": loss_mask,
    }


def _counting(monkeypatch) -> dict:
    """Count the rows entering the logits GEMM in forward and the recomputing GEMMs of backward."""
    counts = {"forward_rows": 0, "accumulations": 0}
    stats, grad = cross_entropy.IMPLS["torch"]
    accumulate = cross_entropy._accumulate

    def counted_stats(logits, labels_local):
        counts["forward_rows"] += logits.shape[0]
        return stats(logits, labels_local)

    def counted_accumulate(acc, a, b):
        counts["accumulations"] += 1
        return accumulate(acc, a, b)

    monkeypatch.setitem(cross_entropy.IMPLS, "torch", (counted_stats, grad))
    monkeypatch.setattr(cross_entropy, "_accumulate", counted_accumulate)
    return counts


def test_trainer_masks_tokens_out_of_the_output_gemms(monkeypatch):
    from megatron_infi.training.trainer import _forward_step

    model, _ = _model("fp32")
    batch = _batch()
    counted = int(batch["loss_mask"].sum())

    def step(forward):
        model.zero_grad()
        loss, _, _ = forward()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    def trainer_step():
        output, loss_func = _forward_step(iter([batch]), model)
        return loss_func(output)

    def unmasked_model_step():  # every token through the GEMMs, the mask applied by the loss only
        from megatron_infi.training.trainer import _loss_func

        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        return _loss_func(batch["loss_mask"], output)

    reference_loss, reference_grads = step(unmasked_model_step)
    counts = _counting(monkeypatch)
    loss, grads = step(trainer_step)
    assert counts["forward_rows"] == counted < B * S
    # one dW accumulation per forward chunk; none in backward (no row's upstream gradient differs)
    assert counts["accumulations"] == 1
    assert_close_rel(loss, reference_loss, 1e-6, "loss")
    for name, grad in grads.items():
        assert_close_rel(grad, reference_grads[name], 1e-5, name)


def _bf16_ddp_grads(tie_embeddings: bool):
    """One masked-mean step of a bf16 model (fp32 main_grad buffers) under megatron-core DDP, with
    what an fp32 reference needs: the output layer's input, the word-embedding output's gradient."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    chunk, tconfig = _model("bf16", tie_embeddings)
    ddp = DistributedDataParallel(
        config=tconfig, ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True), module=chunk
    )
    gpt = chunk.module  # inside Float16Module
    seen = {}
    gpt.decoder.final_layernorm.register_forward_hook(lambda m, i, out: seen.__setitem__("hidden", out))

    def keep_embedding_grad(module, inputs, out):
        out.register_hook(lambda grad: seen.__setitem__("d_embedding", grad))

    gpt.embedding.word_embeddings.register_forward_hook(keep_embedding_grad)
    batch = _batch()
    mask = batch["loss_mask"]
    loss = ddp(batch["tokens"], batch["position_ids"], None, labels=batch["labels"], loss_mask=mask)
    ((loss * mask).sum() / mask.sum()).backward()
    ddp.finish_grad_sync()
    weight = gpt.shared_embedding_or_output_weight() if tie_embeddings else gpt.output_layer.weight
    return weight, batch, seen


def _reference_output_grad(weight, batch, hidden) -> torch.Tensor:
    """dW of the masked mean loss from the same bf16 factors (hidden, W, softmax - one_hot rounded
    to bf16 as the logits buffer holds it), products summed in fp32 and never rounded."""
    counted = batch["loss_mask"].transpose(0, 1).reshape(-1) != 0
    h = hidden.detach().reshape(-1, hidden.shape[-1])[counted]
    labels = batch["labels"].transpose(0, 1).reshape(-1)[counted]
    logits = (h @ weight.detach().t()).float()
    dlogits = torch.softmax(logits, dim=-1) - torch.nn.functional.one_hot(labels, logits.shape[1])
    return dlogits.to(torch.bfloat16).float().t() @ h.float() / counted.sum()


@pytest.mark.parametrize("tie_embeddings", [False, True], ids=["untied", "tied"])
def test_output_weight_grad_reaches_main_grad_in_fp32(tie_embeddings):
    weight, batch, seen = _bf16_ddp_grads(tie_embeddings)
    assert weight.dtype == torch.bfloat16 and weight.main_grad.dtype == torch.float32
    expected = _reference_output_grad(weight, batch, seen["hidden"])
    if tie_embeddings:
        d_embedding = seen["d_embedding"].reshape(-1, weight.shape[1]).float()
        expected = expected.index_add(0, batch["tokens"].reshape(-1), d_embedding)
    relative_error = ((weight.main_grad - expected).abs().max() / expected.abs().max()).item()
    # bf16 rounding of the gradient (or of its sum with the embedding's) errs by up to 2^-9
    # relative, i.e. ~1e-3 of the largest entries; fp32 accumulation only by summation order.
    assert relative_error <= 1e-5, relative_error

"""The same trainer on a GPU: NCCL, bf16 params with fp32 main params, loss falls."""

import pytest

from tests.training.launch import train_in_process


@pytest.mark.gpu
def test_bf16_training_on_gpu(tmp_path):
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "model": {"preset": "tiny"},
        "data": {"mock": True, "seq_length": 256},
        "train": {"train_iters": 30, "global_batch_size": 8, "micro_batch_size": 4, "precision": "bf16"},
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4},
        "logging": {"log_interval": 5, "tensorboard": False},
    }
    trainer, losses = train_in_process(cfg)
    import torch

    params = [p for m in trainer.model for p in m.parameters()]
    assert all(p.is_cuda and p.dtype == torch.bfloat16 for p in params)
    assert losses[-1] < losses[0] - 0.3, losses

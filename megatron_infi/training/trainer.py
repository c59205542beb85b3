"""The pretrain / anneal loop on megatron-core: TP, PP (1F1B, interleaved), DP with megatron-core's
DDP and distributed optimizer, exact resume, periodic validation, preemption-safe exit."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_infi.config.core import dump_yaml
from megatron_infi.config.schema import TrainConfig
from megatron_infi.data import gpt_data
from megatron_infi.locks import DirLock, LockHeldError
from megatron_infi.models.gpt import resolve_dtype
from megatron_infi.models.spec import check_supported
from megatron_infi.training import checkpoint as ckpt
from megatron_infi.training import family as families
from megatron_infi.training.distributed import WorldInfo, device, init_model_parallel
from megatron_infi.training.metrics import MetricsLogger
from megatron_infi.training.optim import apply_adam_impl, build_optimizer, build_scheduler, resolve_adam_impl
from megatron_infi.utils import atomic_write_text, set_run_caches

log = logging.getLogger("megatron_infi")


def _loss_func(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Sum of per-token losses and the token count: megatron-core then normalises by the global
    token count, so the loss is the same for any TP / PP / DP / micro-batch split."""
    losses = output_tensor.view(-1).float()
    mask = loss_mask.view(-1).float()
    loss = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    return loss, num_tokens, {"lm loss": torch.stack([loss.detach(), num_tokens.detach().float()])}


def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    dev = device()
    tokens = batch["tokens"].to(dev, non_blocking=True)
    labels = batch["labels"].to(dev, non_blocking=True)
    position_ids = batch["position_ids"].to(dev, non_blocking=True)
    loss_mask = batch["loss_mask"].to(dev, non_blocking=True)
    # The fused output loss leaves masked tokens out of its GEMMs (kernels/output_layer.py).
    output = model(tokens, position_ids, None, labels=labels, loss_mask=loss_mask)
    return output, partial(_loss_func, loss_mask)


@dataclass
class StepResult:
    loss: float
    grad_norm: float | None
    lr: float
    skipped: bool


@dataclass
class Trainer:
    cfg: TrainConfig
    world: WorldInfo = None
    model: list = field(default_factory=list)
    optimizer: object = None
    scheduler: object = None
    state: ckpt.TrainState = field(default_factory=ckpt.TrainState)
    tokenizer: object = None
    family: families.Family = None
    _stop_requested: bool = False
    _stop_agreed: bool = False
    _resumed_at: int | None = None
    _run_lock: DirLock | None = None
    _launcher_pid: int | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> Trainer:
        # First, so that a preemption signal during the (long) model and data setup is not lost.
        self._install_signal_handlers()
        cfg = self.cfg
        set_run_caches(cfg.run_dir)
        check_supported(cfg.model, cfg.parallel)
        # Resolved before config.yaml is written, so the run records the AdamW kernel it used.
        cfg.optimizer.impl = resolve_adam_impl(cfg.optimizer.impl, device().type)
        # Before the process group: megatron-core's own layout errors come after every rank has joined.
        cfg.validate_world(int(os.environ.get("WORLD_SIZE", "1")))
        self.world = init_model_parallel(
            cfg.parallel.tensor, cfg.parallel.pipeline, cfg.parallel.virtual_pipeline, cfg.train.seed
        )
        cfg.validate_world(self.world.world_size)
        self._lock_run_dir()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _lock_run_dir(self) -> None:
        """Rank 0 locks run_dir for the life of the run; every rank learns the outcome, so none waits
        in a collective for a rank that gave up."""
        holder, held = None, False
        if self.world.is_main:
            try:
                self._run_lock = DirLock(self.cfg.run_dir, "run_dir").acquire()
            except LockHeldError as err:
                holder, held = err.holder, True
        if self.world.world_size > 1:
            box = [(holder, held)]
            dist.broadcast_object_list(box, src=0)
            holder, held = box[0]
        if held:
            raise LockHeldError("run_dir", Path(self.cfg.run_dir), holder)

    def close(self) -> None:
        """Release run_dir (also when the process ends: the lock is an flock)."""
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def _build(self) -> None:
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )

        cfg = self.cfg
        self.family = families.select(cfg)
        self.tokenizer = self.family.preflight_data(cfg)
        if self.world.is_main:
            Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(cfg.run_dir) / "config.yaml", dump_yaml(cfg))

        dtype = resolve_dtype(cfg.train.precision)
        chunks, tconfig = self.family.build_model(cfg, self.tokenizer)
        tconfig.calculate_per_token_loss = True
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=cfg.parallel.overlap_grad_reduce,
            overlap_param_gather=cfg.parallel.overlap_param_gather,
            use_distributed_optimizer=cfg.parallel.distributed_optimizer,
            bucket_size=cfg.parallel.ddp_bucket_size,
            check_for_nan_in_grad=True,
        )
        self.model = [
            DistributedDataParallel(
                config=tconfig, ddp_config=ddp_config, module=chunk, disable_bucketing=i > 0
            )
            for i, chunk in enumerate(chunks)
        ]
        self.optimizer = build_optimizer(cfg, self.model, dtype)
        self.scheduler = build_scheduler(cfg, self.optimizer)

        tconfig.grad_scale_func = self.optimizer.scale_loss
        tconfig.finalize_model_grads_func = finalize_model_grads
        if cfg.parallel.overlap_grad_reduce:
            sync = [m.no_sync for m in self.model]
            tconfig.no_sync_func = sync[0] if len(sync) == 1 else sync
        if cfg.parallel.overlap_param_gather:
            tconfig.param_sync_func = [m.start_param_sync for m in self.model]
            if len(self.model) == 1:
                tconfig.param_sync_func = tconfig.param_sync_func[0]
        self._tconfig = tconfig
        self._load_initial_state()
        apply_adam_impl(self.optimizer, cfg.optimizer.impl)

    def _load_initial_state(self) -> None:
        cfg = self.cfg
        root = Path(cfg.run_dir) / "checkpoints"
        latest = ckpt.latest_iteration(root) if cfg.checkpoint.resume else None
        if latest is not None:
            path, _ = ckpt.resolve_checkpoint_dir(root, latest)
            self.state = ckpt.load_checkpoint(
                path, self.model, self.optimizer, self.scheduler, load_optimizer=True, load_train_state=True
            )
            log.info(f"resumed from {path} at iteration {self.state.iteration}")
            self._resumed_at = self.state.iteration
        elif cfg.checkpoint.load:
            path, _ = ckpt.resolve_checkpoint_dir(cfg.checkpoint.load, cfg.checkpoint.load_iteration)
            ckpt.load_checkpoint(
                path,
                self.model,
                self.optimizer,
                self.scheduler,
                load_optimizer=cfg.checkpoint.load_optimizer,
                load_train_state=False,
            )
            what = "weights and optimizer state" if cfg.checkpoint.load_optimizer else "weights"
            log.info(f"{cfg.stage}: starting from the {what} of {path}")
        elif self.family.init_weights is not None:
            self.family.init_weights(cfg, self.model, self.optimizer)
        if self.world.is_main and latest is None:
            log.info(
                f"{cfg.stage}: {sum(p.numel() for m in self.model for p in m.parameters()):,} parameters on rank 0"
            )

    def _install_signal_handlers(self) -> None:
        def request_stop(signum, frame):
            self._stop_requested = True

        for sig in (signal.SIGTERM, signal.SIGUSR1):
            # ValueError off the main thread (e.g. a test runner thread): no handler there.
            with contextlib.suppress(ValueError):
                signal.signal(sig, request_stop)
        # torchrun forwards SIGTERM / SIGINT to its ranks, but when it dies of a signal it does not
        # handle (SIGUSR1, SIGKILL) the ranks would train on as orphans: they watch their launcher.
        # Only under torchrun (TORCHELASTIC_RUN_ID): a plain process may outlive its shell (nohup).
        self._launcher_pid = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None

    def _launcher_gone(self) -> bool:
        if self._launcher_pid is None or os.getppid() == self._launcher_pid:
            return False
        if not self._stop_requested:
            log.warning(f"rank {self.world.rank}: the launcher (pid {self._launcher_pid}) is gone: stopping")
        return True

    # ---------------------------------------------------------------- steps
    def _iterators(self, dataset, consumed: int):
        from megatron.core import parallel_state as ps

        dp_rank, dp = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        its = [gpt_data.micro_batch_iterator(dataset, consumed, self.cfg, dp_rank, dp) for _ in self.model]
        return its[0] if len(its) == 1 else its

    def _num_microbatches(self) -> int:
        t = self.cfg.train
        return t.global_batch_size // (t.micro_batch_size * self.world.data)

    def _reduce_loss(self, losses: list[dict]) -> float:
        """Token-weighted loss over the global batch, identical on every rank.

        The same all-reduce carries the stop flag (a signal seen by any rank), so agreeing to stop
        costs no extra collective.
        """
        totals = torch.zeros(3, dtype=torch.float64, device=device())
        for item in losses:
            totals[:2] += item["lm loss"].to(totals)
        self._stop_requested = self._stop_requested or self._launcher_gone()
        totals[2] = float(self._stop_requested)
        dist.all_reduce(totals)
        self._stop_agreed = bool(totals[2].item() > 0)
        return (totals[0] / totals[1].clamp(min=1)).item()

    def _forward_backward(self, data_iterator, forward_only: bool) -> list[dict]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        step = self.family.forward_step(_loss_func) if self.family.forward_step else _forward_step
        return get_forward_backward_func()(
            forward_step_func=step,
            data_iterator=data_iterator,
            model=self.model,
            num_microbatches=self._num_microbatches(),
            seq_length=self.cfg.data.seq_length,
            micro_batch_size=self.cfg.train.micro_batch_size,
            forward_only=forward_only,
        )

    def train_step(self, data_iterator) -> StepResult:
        for chunk in self.model:
            chunk.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self._forward_backward(data_iterator, forward_only=False)
        updated, grad_norm, _ = self.optimizer.step()
        if updated:
            self.scheduler.step(increment=1)
        lr = self.optimizer.param_groups[0]["lr"]
        return StepResult(self._reduce_loss(losses), grad_norm, lr, skipped=not updated)

    @torch.no_grad()
    def evaluate(self, valid_iterator, advance: bool = True) -> float:
        """Validation loss over `eval_iters` global batches; `advance=False` leaves the validation
        position where it is (the step-0 evaluation, so that the first periodic one sees the same windows)."""
        for chunk in self.model:
            chunk.eval()
        losses: list[dict] = []
        for _ in range(self.cfg.train.eval_iters):
            losses += self._forward_backward(valid_iterator, forward_only=True)
            if advance:
                self.state.consumed_valid_samples += self.cfg.train.global_batch_size
        for chunk in self.model:
            chunk.train()
        return self._reduce_loss(losses)

    def save(self) -> Path:
        path = self.tokenizer.path
        tokenizer_info = {
            "path": str(Path(path).resolve()) if path != "mock" else path,
            "sha256": self.tokenizer.sha256,
        }
        root = Path(self.cfg.run_dir) / "checkpoints"
        path = ckpt.save_checkpoint(
            root, self.cfg, self.model, self.optimizer, self.scheduler, self.state, tokenizer_info
        )
        log.info(f"saved checkpoint {path}")
        return path

    # ---------------------------------------------------------------- loop
    def run(self) -> list[float]:
        """Train to `train.train_iters`; returns this process's per-step losses. Releases run_dir."""
        try:
            return self._train()
        finally:
            self.close()

    def _train(self) -> list[float]:
        cfg, t = self.cfg, self.cfg.train
        train_ds, valid_ds = self.family.build_datasets(cfg, self.tokenizer, self.world.data)
        train_it = self._iterators(train_ds, self.state.consumed_train_samples)
        validates = t.eval_interval or t.eval_at_start
        valid_it = self._iterators(valid_ds, self.state.consumed_valid_samples) if validates else None
        metrics = MetricsLogger(cfg, self.world.is_main, self.world.world_size)
        losses: list[float] = []
        # A requeued run that resumes a finished one trains nothing and must not rewrite its checkpoint.
        saved_at = self._resumed_at
        from tqdm import tqdm

        bar = tqdm(
            total=t.train_iters,
            initial=self.state.iteration,
            desc=cfg.stage,
            disable=None if self.world.is_main else True,  # None: only on a terminal, not into a log
            dynamic_ncols=True,
            leave=False,
        )
        try:
            if t.eval_at_start and self.state.iteration == 0 and valid_it is not None:
                # Its own iterator over the first validation windows: step 0 and the first periodic
                # validation measure the same text, so their difference is what training changed.
                first = self._iterators(valid_ds, self.state.consumed_valid_samples)
                metrics.validation(0, self.evaluate(first, advance=False))
            while self.state.iteration < t.train_iters:
                result = self.train_step(train_it)
                self.state.iteration += 1
                self.state.consumed_train_samples += t.global_batch_size
                losses.append(result.loss)
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss:.3f}")
                metrics.step(self.state.iteration, result.loss, result.lr, result.grad_norm)
                if valid_it is not None and t.eval_interval and self.state.iteration % t.eval_interval == 0:
                    metrics.validation(self.state.iteration, self.evaluate(valid_it))
                interval = cfg.checkpoint.save_interval
                if interval and self.state.iteration % interval == 0:
                    self.save()
                    saved_at = self.state.iteration
                if self._stop_agreed:
                    log.info(
                        f"stop requested (signal or launcher gone): checkpointing at iteration {self.state.iteration}"
                    )
                    break
                if t.exit_interval and self.state.iteration % t.exit_interval == 0:
                    log.info(f"exit_interval: stopping at iteration {self.state.iteration}")
                    break
        finally:
            bar.close()
            metrics.close()
        if saved_at != self.state.iteration:
            self.save()
        return losses

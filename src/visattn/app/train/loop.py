"""The training loop of ``visattn train``: data, model, optimisation, checkpoints after every epoch and at a
signal, exact resume.

* Scale-out: ``torchrun --nproc_per_node N -m visattn train ...`` (gloo on CPU, NCCL on GPU); ``batch_size`` is the
  global batch, split evenly across ranks, and the ranks' batches together are exactly the single-process batch.
* A checkpoint (``OUTPUT/checkpoint.pt``) holds the model, optimizer, scheduler, scaler, EMA, every rank's RNG
  state, the epoch and the position inside it; it is written atomically and sealed with its SHA-256 after every
  epoch and when SIGTERM or SIGINT arrives (data-loader workers ignore both, so a signal to the whole process group
  still ends in a checkpoint). With a fixed seed on CPU a resumed run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ...checkpoint import load_file, load_official, save_checkpoint
from ...hub import fetch
from ...models import create_model
from .. import data as datasets
from ..common import Progress, set_threads
from .config import DEFAULT_OVERRIDES, TrainConfig
from .optim import ModelEMA, adamw, warmup_cosine
from .runtime import Runtime
from .state import RunFolder, rng_state, set_rng_state


class Interrupted(Exception):
    """The run stopped at a signal after writing its checkpoint; ``signum`` is the signal."""

    def __init__(self, signum: int, epoch: int, step: int):
        super().__init__(f"{signal.Signals(signum).name}: checkpoint saved at epoch {epoch}, step {step}")
        self.signum = signum


class _Signals:
    """SIGTERM / SIGINT set a flag; the loop checkpoints at the next step boundary (all ranks agree on which)."""

    def __init__(self):
        self.received: int | None = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, frame):
        self.received = signum

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _ignore_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM / SIGINT to the main process, which stops them after its checkpoint."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@torch.no_grad()
def evaluate(model: nn.Module, ds, rt: Runtime, batch_size: int = 256) -> float:
    """Top-1 on ``ds``; each rank scores a disjoint shard (no padded duplicates) and the counts are summed."""
    model.eval()
    shard = torch.utils.data.Subset(ds, range(rt.rank, len(ds), rt.world))
    correct = total = 0
    for x, y in DataLoader(shard, batch_size=batch_size):
        pred = model(x.to(rt.device)).argmax(dim=1).cpu()
        correct += int((pred == y).sum())
        total += len(y)
    correct, total = rt.sum(correct, total)
    return correct / max(total, 1)


def _autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


def describe_pretrained(report, source, n_classes: int) -> str:
    """One line about a fine-tuning start: what was loaded, adopted and re-initialised."""
    parts = [f"pretrained: loaded {report.loaded} tensors from {source}"]
    if report.adopted:
        parts.append(f"adopted {', '.join(report.adopted)}")
    if report.dropped:
        parts.append(f"classifier re-initialised for {n_classes} classes (dropped {', '.join(report.dropped)})")
    return "; ".join(parts)


def train(cfg: TrainConfig) -> dict:
    """Run training; returns the final metrics (rank 0's view). Raises :class:`Interrupted` after a signal."""
    cfg.check()
    # "auto" reads the load average, which a long-lived caller of train() is part of: the command applies it (in a
    # fresh process); here only an explicit count is applied
    threads = set_threads(cfg.threads) if cfg.threads != "auto" else torch.get_num_threads()
    rt = Runtime(cfg.device)
    if rt.main and not cfg.quiet:
        print(f"{threads} CPU thread{'s' if threads > 1 else ''} ({cfg.threads})", flush=True)
    folder = None
    try:
        if cfg.batch_size % rt.world:
            raise ValueError(f"--batch-size {cfg.batch_size} (global) must be divisible by the {rt.world} processes")
        if rt.main:
            folder = RunFolder(cfg.output, cfg.resume, cfg.overwrite)
        metrics = _train(cfg, rt, folder)
    except BaseException as err:
        if folder is not None:
            folder.release(failed=not isinstance(err, Interrupted))
        raise
    finally:
        rt.close()
    if folder is not None:
        folder.release()
    return metrics


# options a resumed run must share with the stored one (anything else changes what the run computes); --epochs may
# grow, the others (output, device, workers, quiet, log_steps) do not change the results
_RESUME_FIXED = ("batch_size", "seed", "lr", "weight_decay", "warmup_epochs", "label_smoothing", "clip_grad", "amp",
                 "ema", "data", "size", "pretrained")


def _canonical_grad_strides(model: nn.Module) -> None:
    """Depthwise-conv weight gradients come back from the CPU kernels with another stride on their size-1
    dimension (the same memory): DDP's reducer compares strides literally and warns at every step ("Grad strides do
    not match bucket view strides"). Those few gradients are re-strided to the parameter's layout as they arrive."""
    for p in model.parameters():
        if p.requires_grad and 1 in p.shape and p.dim() > 1:
            p.register_hook(lambda g, p=p: g if g.stride() == p.stride()
                            else g.clone(memory_format=torch.contiguous_format))


def _check_resume(stored: dict, cfg: TrainConfig, done_epochs: int) -> None:
    differ = [f"--{k.replace('_', '-')} {stored[k]!r} (now {getattr(cfg, k)!r})" for k in _RESUME_FIXED
              if k in stored and stored[k] != getattr(cfg, k) and not (k == "pretrained" and cfg.pretrained is None)]
    if differ:
        raise ValueError(f"--resume continues the stored run, which was started with {'; '.join(differ)}; resume with "
                         f"the same options (only --epochs may change) or start a new run (--output, --overwrite)")
    if cfg.epochs < done_epochs:
        raise ValueError(f"--epochs {cfg.epochs} is fewer than the {done_epochs} epochs the run has completed")


def _truncate_log(path: Path, key: str, last: int) -> None:
    """Drop lines of a jsonl log written after the checkpoint a run resumes from (``key`` > ``last``)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get(key, 0) <= last]
    path.write_text("".join(line + "\n" for line in kept))


def _finite(value):
    """JSON has no NaN / inf: non-finite floats are written as null."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _train(cfg: TrainConfig, rt: Runtime, folder: RunFolder | None = None) -> dict:
    out = Path(cfg.output)
    ckpt_path = out / "checkpoint.pt"
    size = cfg.input_size()
    train_ds = datasets.build(cfg.data, "train", size)
    classes = getattr(train_ds, "classes", None)
    val_ds = datasets.build(cfg.data, "val", size, classes)
    n_classes = datasets.num_classes(train_ds)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    random.seed(cfg.seed)
    model = create_model(cfg.model_name(), num_classes=n_classes, **cfg.model_overrides())
    resuming = cfg.resume and ckpt_path.exists()
    if cfg.pretrained and not resuming:  # fine-tuning: start from the official weights
        source = cfg.pretrained if Path(cfg.pretrained).is_file() else fetch(cfg.pretrained)  # a path, or a name
        try:
            report = load_official(model, source)
        except ValueError as err:
            if "does not fit" not in str(err) and "shape mismatch" not in str(err):
                raise
            which = (f"--model {cfg.model}" if cfg.model else f"the default model ({cfg.model_name()} reduced by "
                     f"{DEFAULT_OVERRIDES})")
            raise ValueError(f"--pretrained {cfg.pretrained} does not fit {which}: {err}. Pass --model with the "
                             f"checkpoint's variant (e.g. --model volo_d1 for d1_224_84.2.pth.tar) and no --set that "
                             f"changes its widths") from None
        if rt.main and not cfg.quiet:
            print(describe_pretrained(report, cfg.pretrained, n_classes), flush=True)
    model = model.to(rt.device)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    per_rank = cfg.batch_size // rt.world
    sampler = DistributedSampler(train_ds, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set ({len(train_ds)} images)")
    total = steps_per_epoch * cfg.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(max(1, round(cfg.warmup_epochs * steps_per_epoch)), total))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=cfg.amp == "fp16")
    ema = ModelEMA(model, cfg.ema) if cfg.ema > 0 else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    start_epoch, skip, step = 0, 0, 0
    if resuming:
        state = load_file(ckpt_path, sealed=True)
        if not (isinstance(state, dict) and state.get("model_name") == cfg.model_name()):
            raise ValueError(f"{ckpt_path} is not a checkpoint of this run's model {cfg.model_name()!r}; resume with "
                             f"the same --model and --set, or pass --overwrite to start afresh (the old files are "
                             f"kept until the new run's first checkpoint)")
        _check_resume(state.get("config") or {}, cfg, state.get("epoch", 0))
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"{ckpt_path} does not fit this run ({type(err).__name__}: {str(err).strip()[:300]}); "
                             f"resume with the --set options and data the run was started with, or pass "
                             f"--overwrite to start afresh") from None
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, skip, step = state["epoch"], state["step_in_epoch"], state["step"]
        if rt.main:  # lines logged after that checkpoint (a kill -9) are written again by the resumed run
            _truncate_log(out / "steps.jsonl", "step", step)
            _truncate_log(out / "metrics.jsonl", "epoch", start_epoch)
        set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
        if rt.main and not cfg.quiet:
            print(f"resumed from {ckpt_path}: epoch {start_epoch}, step {skip} of {steps_per_epoch}", flush=True)
    elif cfg.resume and rt.main and not cfg.quiet:
        print(f"--resume: no checkpoint at {ckpt_path}, starting from scratch", flush=True)
    if rt.distributed:
        _canonical_grad_strides(model)
    ddp = nn.parallel.DistributedDataParallel(model) if rt.distributed else model

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        states = rt.gather(rng_state())  # every rank's RNG state, so a resumed run draws the same dropout masks
        if rt.main:
            save_checkpoint(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                 scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                                 ema=None if ema is None else ema.module.state_dict(), rng=states, epoch=epoch,
                                 step_in_epoch=step_in_epoch, step=step, config=asdict(cfg),
                                 model_name=cfg.model_name(), model_args=dict(cfg.model_overrides(),
                                                                              num_classes=n_classes),
                                 classes=classes, input_size=size), ckpt_path,
                            what=f"the checkpoint of epoch {epoch}, step {step_in_epoch}")
            if folder is not None:
                folder.commit()  # an overwritten run's files can go now

    running_stats = [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                     for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    signals = _Signals()
    metrics = {}
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            # its own generator: creating the iterator must not draw from the global RNG (exact resume)
            loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, drop_last=True,
                                num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed + epoch),
                                worker_init_fn=_ignore_signals if cfg.workers else None)
            ddp.train()
            progress = Progress(steps_per_epoch - skip) if rt.main and not cfg.quiet else None
            loss_sum = correct = seen = 0.0
            skipped = 0
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader):
                if i < skip:
                    continue
                x, y = x.to(rt.device), y.to(rt.device)
                saved_stats = [b.clone() for b in running_stats]  # restored if this step is skipped
                with _autocast(cfg, rt.device):
                    logits = ddp(x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                loss_value = loss.detach().item()
                if rt.any(not math.isfinite(loss_value)):  # every rank skips the same step
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                    with torch.no_grad():  # the batch's BatchNorm statistics go too
                        for b, saved in zip(running_stats, saved_stats, strict=True):
                            b.copy_(saved)
                    if rt.main and skipped == 1:
                        warnings.warn(f"epoch {epoch + 1}, step {i + 1}: the loss is not finite ({loss_value}); "
                                      f"the step is skipped (weights and BatchNorm statistics unchanged). Non-finite "
                                      f"inputs or a too high --lr cause this", stacklevel=1)
                    step += 1
                    if rt.any(signals.received is not None):
                        checkpoint(epoch, i + 1)
                        del loader
                        raise Interrupted(signals.received or signal.SIGTERM, epoch, i + 1)
                    continue
                scaler.unscale_(optimizer)
                if cfg.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                if ema is not None:
                    ema.update(model)
                if step <= cfg.log_steps:  # global mean loss of this step, for step-by-step comparisons
                    total_loss, count = rt.sum(loss_value * len(y), len(y))
                    if rt.main:
                        with open(out / "steps.jsonl", "a") as f:
                            f.write(json.dumps(dict(step=step, loss=_finite(total_loss / count))) + "\n")
                loss_sum += loss_value * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if progress is not None:
                    rate = seen * rt.world / (time.perf_counter() - t0)
                    progress.step(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} {rate:.0f} img/s")
                if rt.any(signals.received is not None):
                    checkpoint(epoch, i + 1)
                    del loader  # stops the workers
                    raise Interrupted(signals.received or signal.SIGTERM, epoch, i + 1)
            skip = 0
            if skipped and seen == 0:  # not one step of this epoch had a finite loss
                raise ValueError(f"every step of epoch {epoch + 1} had a non-finite loss; check the data for NaN / "
                                 f"inf values or lower --lr")
            loss_sum, correct, seen = rt.sum(loss_sum, correct, seen)
            elapsed = time.perf_counter() - t0
            rt.broadcast_buffers(model)  # score with rank 0's BatchNorm statistics everywhere
            top1 = evaluate(ema.module if ema is not None else model, val_ds, rt)
            metrics = dict(epoch=epoch + 1, step=step, train_loss=loss_sum / max(seen, 1),
                           train_top1=correct / max(seen, 1), val_top1=top1, lr=scheduler.get_last_lr()[0],
                           images_per_s=seen / elapsed, epoch_time_s=elapsed, world_size=rt.world,
                           skipped_steps=skipped)
            checkpoint(epoch + 1, 0)
            if rt.main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({k: _finite(v) for k, v in metrics.items()}, allow_nan=False) + "\n")
                if not cfg.quiet:
                    print(f"epoch {epoch + 1}: loss {metrics['train_loss']:.4f}  held-out top-1 {top1:.4f}  "
                          f"{metrics['images_per_s']:.0f} img/s", flush=True)
    finally:
        signals.restore()
    return metrics

"""``visattn train``: train any registered backbone, on one process or many (``torchrun``), and resume exactly.

* Data: the bundled digits set (default) or ``--data root`` with ``root/{train,val}/<class>/*``.
* Scale-out: ``torchrun --nproc_per_node N -m visattn train ...`` (gloo on CPU, NCCL on GPU); ``--batch-size`` is
  the global batch, split evenly across ranks, and the ranks' batches together are exactly the single-process
  batch, so one process and N processes follow the same optimisation (up to BatchNorm statistics, which stay
  per-rank on CPU).
* Checkpoints (``DIR/checkpoint.pt``) hold the model, optimizer, scheduler, scaler, EMA, every RNG state, the
  epoch and the position inside it; they are written atomically (temporary file, fsync, rename) after every epoch
  and when SIGTERM arrives. ``--resume`` continues from the last one; with a fixed seed on CPU the final weights
  are bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from . import data as datasets
from .bench import Progress
from .models import create_model, list_models

# the default small model: LITv2 reduced to a few thousand parameters per stage, for 32x32 inputs
DEFAULT_MODEL = "litv2_s"
DEFAULT_OVERRIDES = {"embed_dim": 32, "depths": (1, 1, 2, 1), "num_heads": (1, 2, 4, 8), "drop_path_rate": 0.0}


@dataclass
class TrainConfig:
    model: str | None = None
    overrides: dict = field(default_factory=dict)
    epochs: int = 25
    batch_size: int = 64
    output: str = "runs/visattn"
    data: str | None = None
    resume: bool = False
    size: int | None = None
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    clip_grad: float = 1.0
    amp: str = "none"
    ema: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    quiet: bool = False
    log_steps: int = 20  # the first steps' global losses go to steps.jsonl (to compare runs step by step)

    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL

    def model_overrides(self) -> dict:
        return self.overrides if self.model else {**DEFAULT_OVERRIDES, **self.overrides}

    def input_size(self) -> int:
        return self.size or (32 if self.data is None else 224)


def parse_overrides(items: list[str]) -> dict:
    """``["embed_dim=32", "depths=(1,1,1,1)"]`` -> dict; values are Python literals (strings if they are not)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"model overrides look like key=value (e.g. embed_dim=32), got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


class Runtime:
    """Process-group bookkeeping: rank, world size, device; initialised from torchrun's environment."""

    def __init__(self, device: str = "auto"):
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        self.device = torch.device(f"cuda:{self.local_rank}" if use_cuda else "cpu")
        if use_cuda:
            torch.cuda.set_device(self.device)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """Sum scalars over ranks (float64, so counts stay exact)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.distributed:
            dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def atomic_save(obj, path: Path) -> None:
    """Write ``obj`` to a temporary file beside ``path``, fsync it, then rename it over ``path``: a reader sees the
    old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def warmup_cosine(warmup_steps: int, total_steps: int):
    """LR factor: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


class ModelEMA:
    """Exponential moving average of a model's parameters (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        import copy

        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.module.parameters(), model.parameters(), strict=True):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for e, b in zip(self.module.buffers(), model.buffers(), strict=True):
            e.copy_(b)


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


class _StopFlag:
    """Set by SIGTERM; the loop checkpoints at the next step boundary (all ranks agree on which)."""

    def __init__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self.previous)


def train(cfg: TrainConfig) -> dict:
    """Run training; returns the final metrics (rank 0's view)."""
    if cfg.model is not None and cfg.model not in list_models():
        raise ValueError(f"unknown model {cfg.model!r}; choose from {', '.join(list_models())}")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp must be none, bf16 or fp16, got {cfg.amp!r}")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    rt = Runtime(cfg.device)
    try:
        return _train(cfg, rt)
    finally:
        rt.close()


def _train(cfg: TrainConfig, rt: Runtime) -> dict:
    if cfg.batch_size % rt.world:
        raise ValueError(f"--batch-size {cfg.batch_size} (global) must be divisible by the {rt.world} processes")
    out = Path(cfg.output)
    ckpt_path = out / "checkpoint.pt"
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    size = cfg.input_size()
    train_ds = datasets.build(cfg.data, "train", size)
    classes = getattr(train_ds, "classes", None)
    val_ds = datasets.build(cfg.data, "val", size, classes)
    n_classes = datasets.num_classes(train_ds)

    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    random.seed(cfg.seed)
    model = create_model(cfg.model_name(), num_classes=n_classes, **cfg.model_overrides()).to(rt.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
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
    if cfg.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=rt.device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.module.load_state_dict(state["ema"])
        start_epoch, skip, step = state["epoch"], state["step_in_epoch"], state["step"]
        set_rng_state(state["rng"][min(rt.rank, len(state["rng"]) - 1)])
        if rt.main and not cfg.quiet:
            print(f"resumed from {ckpt_path}: epoch {start_epoch}, step {skip} of {steps_per_epoch}", flush=True)
    elif cfg.resume and rt.main and not cfg.quiet:
        print(f"--resume: no checkpoint at {ckpt_path}, starting from scratch", flush=True)
    ddp = nn.parallel.DistributedDataParallel(model) if rt.distributed else model

    def checkpoint(epoch: int, step_in_epoch: int) -> None:
        states = [rng_state()]
        if rt.distributed:  # every rank's RNG state, so a resumed run draws the same dropout masks
            gathered = [None] * rt.world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if rt.main:
            atomic_save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                             scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
                             ema=None if ema is None else ema.module.state_dict(), rng=states, epoch=epoch,
                             step_in_epoch=step_in_epoch, step=step, config=asdict(cfg),
                             model_name=cfg.model_name(), model_args=dict(cfg.model_overrides(), num_classes=n_classes),
                             classes=classes, input_size=size), ckpt_path)

    stop = _StopFlag()
    log_path = out / "metrics.jsonl"
    metrics = {}
    try:
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            # its own generator: creating the iterator must not draw from the global RNG (exact resume)
            loader = DataLoader(train_ds, batch_size=per_rank, sampler=sampler, drop_last=True,
                                num_workers=cfg.workers, generator=torch.Generator().manual_seed(cfg.seed + epoch))
            ddp.train()
            progress = Progress(steps_per_epoch - skip) if rt.main and not cfg.quiet else None
            loss_sum = correct = seen = 0.0
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader):
                if i < skip:
                    continue
                x, y = x.to(rt.device), y.to(rt.device)
                with _autocast(cfg, rt.device):
                    logits = ddp(x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
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
                    total_loss, count = rt.sum(float(loss) * len(y), len(y))
                    if rt.main:
                        with open(out / "steps.jsonl", "a") as f:
                            f.write(json.dumps(dict(step=step, loss=total_loss / count)) + "\n")
                loss_sum += float(loss) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                if progress is not None:
                    rate = seen * rt.world / (time.perf_counter() - t0)
                    progress.step(f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} {rate:.0f} img/s")
                stopping = stop.requested
                if rt.distributed:
                    stopping = rt.sum(float(stopping))[0] > 0
                if stopping:
                    checkpoint(epoch, i + 1)
                    if rt.main:
                        print(f"SIGTERM: checkpoint saved at epoch {epoch}, step {i + 1}; stopping", flush=True)
                    raise SystemExit(143)
            skip = 0
            loss_sum, correct, seen = rt.sum(loss_sum, correct, seen)
            elapsed = time.perf_counter() - t0
            if rt.distributed:  # score with rank 0's BatchNorm statistics everywhere
                for b in model.buffers():
                    dist.broadcast(b, 0)
            top1 = evaluate(ema.module if ema is not None else model, val_ds, rt)
            metrics = dict(epoch=epoch + 1, step=step, train_loss=loss_sum / max(seen, 1),
                           train_top1=correct / max(seen, 1), val_top1=top1, lr=scheduler.get_last_lr()[0],
                           images_per_s=seen / elapsed, epoch_time_s=elapsed, world_size=rt.world)
            checkpoint(epoch + 1, 0)
            if rt.main:
                with open(log_path, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                if not cfg.quiet:
                    print(f"epoch {epoch + 1}: loss {metrics['train_loss']:.4f}  held-out top-1 {top1:.4f}  "
                          f"{metrics['images_per_s']:.0f} img/s", flush=True)
    finally:
        stop.restore()
    return metrics


def add_arguments(parser) -> None:
    parser.add_argument("--model", help=f"model name (default: {DEFAULT_MODEL} reduced by {DEFAULT_OVERRIDES})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="model constructor override, e.g. --set embed_dim=32 --set depths=(1,1,1,1)")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split across processes")
    parser.add_argument("--output", default="runs/visattn", help="folder for checkpoint.pt and metrics.jsonl")
    parser.add_argument("--data", help="image folder root with train/ and val/ (default: bundled digits)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    parser.add_argument("--size", type=int, help="input size (default 32 for digits, 224 for folders)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup-epochs", type=float, default=1.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--clip-grad", type=float, default=1.0, help="max gradient norm (0: off)")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--ema", type=float, default=0.0, help="EMA decay, e.g. 0.999 (0: off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--log-steps", type=int, default=20, help="log the first N steps' losses to steps.jsonl")


def config_from_args(args) -> TrainConfig:
    return TrainConfig(model=args.model, overrides=parse_overrides(args.overrides), epochs=args.epochs,
                       batch_size=args.batch_size, output=args.output, data=args.data, resume=args.resume,
                       size=args.size, lr=args.lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                       label_smoothing=args.label_smoothing, clip_grad=args.clip_grad, amp=args.amp, ema=args.ema,
                       seed=args.seed, workers=args.workers, device=args.device, quiet=args.quiet,
                       log_steps=args.log_steps)


def run(args, parser) -> int:
    try:
        cfg = config_from_args(args)
        train(cfg)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"visattn train: error: {err}", file=sys.stderr)
        return 2
    return 0

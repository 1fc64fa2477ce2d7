"""Training: reproducible, resumable, selected on validation macro ROC AUC, single process or DDP.

    run_dir = train(load_config("configs/demo.yaml"))            # or: d4lenspinn train --config ... [--resume]

Per epoch the run directory gets a line in ``metrics.jsonl`` (and TensorBoard scalars in ``tensorboard/`` when
TensorBoard is installed); ``last.pt`` (everything needed to continue) and
``best.pt`` (the model with the best validation macro AUC, never a physics-loss criterion) are written atomically.
Checkpoints hold tensors and plain Python values only and are read with ``torch.load(weights_only=True)``.
An interruption (Ctrl-C) saves ``last.pt`` at the current step; ``resume=True`` restores model, optimiser,
scheduler, random generators, epoch and step, and replays the data order, so an interrupted run ends with the same
weights as an uninterrupted one. A non-finite loss stops the run naming the term; the last good checkpoint stays.

Under ``torchrun --nproc_per_node N -m d4lenspinn train ...`` each process trains on ``1/N`` of every batch with
DistributedDataParallel (gloo on CPU, nccl on CUDA); rank 0 evaluates, logs and writes checkpoints. Every rank reads
the same global batch (same seeded order and augmentation) and keeps its slice, so the run sees exactly the batches
of a single-process run; reading is cheap next to the model, and this keeps the two comparable (BatchNorm statistics
are per rank, the one expected difference).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .config import TrainConfig, save_config
from .data import download_dataset, load_splits
from .data.datasets import CLASS_NAMES, DataSplits
from .data.download import DATASETS
from .data.presets import get_preset
from .data.writer import check_simulation, simulate_dataset
from .losses import PhysicsLossWeights, classification_loss, physics_losses
from .metrics import classification_metrics
from .models import create_model
from .symmetry import random_transform
from .tta import predict

__all__ = [
    "train",
    "prepare_data",
    "resolve_device",
    "collect_predictions",
    "load_trained_model",
    "TrainedModel",
    "TrainingDiverged",
]

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_data(config: TrainConfig) -> DataSplits:
    """Simulate (once), download (once) or open the configured data and split it with the run's seed.

    A complete simulation already in ``data.root`` is reused only if it was made with the same preset, counts and
    seed; otherwise this is a ``ValueError`` (never silently the wrong data)."""
    data = config.data
    if data.source == "simulate":
        root = Path(data.root)
        manifest = root / "manifest.json"
        preset = get_preset(data.preset, hard=data.hard)
        if manifest.exists() and json.loads(manifest.read_text()).get("complete"):
            check_simulation(root, preset, data.n_per_class, data.n_val_per_class, seed=config.seed)  # same data?
        else:
            simulate_dataset(root, preset, data.n_per_class, data.n_val_per_class, seed=config.seed)
        source = root
    elif data.source in DATASETS:
        source = download_dataset(data.source)
    else:
        source = Path(data.source)
    return load_splits(source, scheme=data.scheme, seed=config.seed, augment_train=False, skip_bad=data.skip_bad)


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def collect_predictions(model: nn.Module, loader: DataLoader, device: torch.device, tta: bool = False):
    """Probabilities ``(N, K)`` and labels ``(N,)`` as numpy arrays, in eval mode."""
    probabilities, labels = [], []
    for images, targets in loader:
        probabilities.append(predict(model, images.to(device), tta=tta).float().cpu())
        labels.append(targets)
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


def _atomic_save(state: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class _Distributed:
    """Process-group bookkeeping; a single process is rank 0 of a world of 1."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _tensorboard(run_dir: Path):
    """A TensorBoard ``SummaryWriter`` into ``run_dir/tensorboard`` when TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _shard(batch: torch.Tensor, ddp: _Distributed) -> torch.Tensor:
    """This rank's contiguous slice of a global batch."""
    if ddp.world == 1:
        return batch
    per_rank = math.ceil(batch.shape[0] / ddp.world)
    return batch[ddp.rank * per_rank : (ddp.rank + 1) * per_rank]


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train ``config.model`` on ``config.data``; returns the run directory."""
    device = resolve_device(config.device)
    ddp = _Distributed(device)
    if ddp.world > 1 and device.type == "cuda":  # one GPU per process
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    run_dir = Path(config.out)
    torch.manual_seed(config.seed)
    if not ddp.main:
        ddp.barrier()  # rank 0 simulates or downloads first; the others then read what it wrote
    splits = prepare_data(config)
    if ddp.main:
        ddp.barrier()
    model = create_model(config.model.name, image_size=splits.image_size, **config.model.kwargs).to(device)
    core = model
    if config.data.batch_size % ddp.world:
        raise ValueError(f"data.batch_size {config.data.batch_size} must be divisible by the {ddp.world} processes")
    if ddp.world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
    train_loader = DataLoader(
        splits.train,
        batch_size=config.data.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.data.num_workers,
        drop_last=True,
    )
    val_loader = DataLoader(splits.val, batch_size=config.data.batch_size, num_workers=config.data.num_workers)
    optim = config.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    steps_per_epoch = len(train_loader)
    warmup = max(1, round(optim.warmup_epochs * steps_per_epoch))
    total = optim.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, warmup, total))
    weights = PhysicsLossWeights(**{k: v for k, v in asdict(config.loss).items() if k != "physics_start_epoch"})
    no_physics = PhysicsLossWeights(tv=0.0, l1=0.0, centre=0.0, poisson=0.0, relensing=0.0)
    use_amp = optim.amp and device.type == "cuda"

    state = {"epoch": 0, "step": 0, "best_auc": -1.0, "stale_epochs": 0, "sums": {}}
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise ValueError(f"--resume: no checkpoint {run_dir / 'last.pt'} to continue from")
        checkpoint = torch.load(run_dir / "last.pt", map_location=device, weights_only=True)
        core.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        state = checkpoint["state"]
        generator.set_state(checkpoint["epoch_generator"])
    elif ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", "last.pt", "best.pt"):
            (run_dir / stale).unlink(missing_ok=True)
    board = None
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        board = _tensorboard(run_dir)

    def checkpoint(epoch_generator: torch.Tensor) -> None:
        if ddp.main:
            _atomic_save(
                {
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "epoch_generator": epoch_generator,
                    "state": state,
                    "config": asdict(config),
                    "image_size": splits.image_size,
                },
                run_dir / "last.pt",
            )

    grid = getattr(core, "grid", None)
    while state["epoch"] < optim.epochs and state["stale_epochs"] < optim.early_stopping_patience:
        epoch = state["epoch"]
        epoch_generator = generator.get_state()  # replaying from here reproduces this epoch's order
        loss_weights = weights if epoch >= config.loss.physics_start_epoch else no_physics
        model.train()
        if state["step"] == 0:  # running sums of a resumed epoch continue where they stopped
            state["sums"] = {"loss": 0.0, "correct": 0, "seen": 0}
        sums = state["sums"]
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{optim.epochs}", disable=not ddp.main, leave=False)
        try:
            for step, (images, labels) in enumerate(bar):
                images = random_transform(images, generator) if config.data.augment else images
                if step < state["step"]:
                    continue  # replaying an interrupted epoch up to where it stopped
                images, labels = _shard(images, ddp).to(device), _shard(labels, ddp).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    output = model(images)
                    terms = {"cross_entropy": classification_loss(output.logits.float(), labels, optim.label_smoothing)}
                    if grid is not None:
                        terms.update(physics_losses(output, images, grid, loss_weights))
                    loss = terms["cross_entropy"] + terms.get("total", 0.0)
                for name, value in terms.items():
                    if not torch.isfinite(value):
                        raise TrainingDiverged(
                            f"loss term '{name}' became {value.item()} at epoch {epoch + 1}, step {step}; "
                            f"the last good checkpoint is {run_dir / 'last.pt'}"
                        )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if optim.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                optimizer.step()
                scheduler.step()
                state["step"] = step + 1
                sums["loss"] += loss.item() * labels.shape[0]
                sums["correct"] += (output.logits.argmax(dim=1) == labels).sum().item()
                sums["seen"] += labels.shape[0]
                bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}")
        except KeyboardInterrupt:
            checkpoint(epoch_generator)
            logger.warning("interrupted: saved %s (resume with --resume)", run_dir / "last.pt")
            raise

        row = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0]}
        if sums["seen"]:
            row.update(train_loss=sums["loss"] / sums["seen"], train_accuracy=sums["correct"] / sums["seen"])
        if ddp.main:
            probabilities, targets = collect_predictions(core, val_loader, device)
            val = classification_metrics(probabilities, targets, CLASS_NAMES)
            row.update(val_accuracy=val["accuracy"], val_macro_auc=val["macro_auc"])
            improved = val["macro_auc"] > state["best_auc"]
            state["best_auc"] = max(state["best_auc"], val["macro_auc"])
            state["stale_epochs"] = 0 if improved else state["stale_epochs"] + 1
            if improved:
                best = {"model": core.state_dict(), "config": asdict(config), "image_size": splits.image_size}
                _atomic_save({**best, "epoch": epoch + 1, "val_macro_auc": val["macro_auc"]}, run_dir / "best.pt")
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            if board is not None:
                for key, value in row.items():
                    if key != "epoch":
                        board.add_scalar(key, value, epoch + 1)
                board.flush()
            logger.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
        state["epoch"], state["step"] = epoch + 1, 0
        checkpoint(generator.get_state())
        ddp.barrier()
    if board is not None:
        board.close()
    return run_dir


class TrainedModel(NamedTuple):
    model: nn.Module  # in eval mode
    config: dict  # the TrainConfig it was trained with, as a dict
    image_size: int


def load_trained_model(checkpoint_path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model stored in a ``best.pt``/``last.pt``, the config it was trained with, and its input size."""
    checkpoint = torch.load(checkpoint_path, map_location=device, weights_only=True)
    config, size = checkpoint["config"], checkpoint["image_size"]
    model = create_model(config["model"]["name"], image_size=size, **config["model"]["kwargs"])
    model.load_state_dict(checkpoint["model"])
    return TrainedModel(model.to(device).eval(), config, size)

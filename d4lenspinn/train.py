"""Training: reproducible, resumable, selected on validation macro ROC AUC, single process or DDP.

    run_dir = train(load_config("configs/demo.yaml"))            # or: d4lenspinn train --config ... [--resume]

    trainer = Trainer(config)                                    # the same, one piece at a time
    trainer.run_epoch()                                          # train_epoch(), validate(), checkpoints
    trainer.fit()

A :class:`Trainer` prepares the data (every file is checked before the first step; see
:func:`d4lenspinn.data.prepare_data`), builds the model with the data's pixel scale, and runs epochs. Per epoch the
run directory gets a line in ``metrics.jsonl`` (and TensorBoard scalars in ``tensorboard/`` when TensorBoard is
installed); ``last.pt`` (everything needed to continue) and ``best.pt`` (the model with the best validation macro
AUC, never a physics-loss criterion) are written atomically by :mod:`d4lenspinn.checkpoint`, with the model card.
An interruption (Ctrl-C) saves ``last.pt`` at the current step; ``resume=True`` restores model, optimiser,
scheduler, random generators and the :class:`TrainingState`, and replays the data order, so an interrupted run ends
with the same weights as an uninterrupted one, for every registered model. A non-finite loss stops the run naming
the term; the last good checkpoint stays. Files dropped by ``data.skip_bad`` are listed in ``bad_files.txt``.

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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import ModelCard, ResumeState, load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig, save_config
from .data import Batch, DataSplits, Truth, batch_loader, prepare_data
from .device import resolve_device
from .io import write_text
from .losses import Objective
from .metrics import classification_metrics
from .models import capabilities_of, create_model
from .physics import MacroLens
from .progress import progress_bar
from .symmetry import random_elements, transform_each, transform_macro
from .tta import collect_predictions

__all__ = ["train", "Trainer", "TrainingState", "TrainingDiverged"]

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite."""


@dataclass
class TrainingState:
    """Where a run stands; saved in ``last.pt`` and restored on resume."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimisation steps completed in the current epoch
    best_auc: float = -1.0  # best validation macro AUC so far
    stale_epochs: int = 0  # epochs since the best validation macro AUC last improved
    loss_sum: float = 0.0  # running sums over the current epoch's steps
    correct: int = 0
    seen: int = 0

    def record_step(self, loss: float, correct: int, seen: int) -> None:
        self.step += 1
        self.loss_sum += loss * seen
        self.correct += correct
        self.seen += seen

    def record_validation(self, macro_auc: float) -> bool:
        """Update the early-stopping bookkeeping; whether ``macro_auc`` is a new best."""
        improved = macro_auc > self.best_auc
        self.best_auc = max(self.best_auc, macro_auc)
        self.stale_epochs = 0 if improved else self.stale_epochs + 1
        return improved

    def next_epoch(self) -> None:
        self.epoch, self.step = self.epoch + 1, 0
        self.loss_sum, self.correct, self.seen = 0.0, 0, 0


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


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

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch."""
        if self.world == 1:
            return batch
        per_rank = math.ceil(batch.shape[0] / self.world)
        return batch[self.rank * per_rank : (self.rank + 1) * per_rank]


def _tensorboard(run_dir: Path):
    """A TensorBoard ``SummaryWriter`` into ``run_dir/tensorboard`` when TensorBoard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class Trainer:
    """One training run of ``config`` (``resume``: continue the run in ``config.out`` from its ``last.pt``)."""

    def __init__(self, config: TrainConfig, resume: bool = False) -> None:
        self.config, self.run_dir = config, Path(config.out)
        self.device = resolve_device(config.device)
        self.ddp = _Distributed(self.device)
        if self.ddp.world > 1 and self.device.type == "cuda":  # one GPU per process
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(self.device)
        if config.data.batch_size % self.ddp.world:
            raise ValueError(
                f"data.batch_size {config.data.batch_size} must be divisible by the {self.ddp.world} processes"
            )
        if "pixel_scale" in config.model.kwargs:
            raise ValueError("model.kwargs.pixel_scale: set data.pixel_scale instead (the model takes the data's)")
        self.objective = Objective(config.loss, config.optim.label_smoothing)  # a loss-term typo fails before the data
        torch.manual_seed(config.seed)
        self.splits = self._prepare_data()
        self.card = ModelCard(
            model=config.model.name,
            image_size=self.splits.image_size,
            pixel_scale=self.splits.pixel_scale,
            class_names=self.splits.class_names,
            training_data=self.splits.description,
        )
        self.model = create_model(
            config.model.name,
            image_size=self.splits.image_size,
            pixel_scale=self.splits.pixel_scale,
            num_classes=len(self.splits.class_names),
            **config.model.kwargs,
        ).to(self.device)
        self.network = self.model  # what the training steps call: the model, or its DDP wrapper
        if self.ddp.world > 1:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.physics = capabilities_of(self.model).physics_maps
        self.truth = self.splits.truth["train"] if self.splits.truth is not None else None
        self.objective.check_model(config.model.name, capabilities_of(self.model).macro_lens, self.truth is not None)

        self.generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
        data = config.data
        self.train_loader = batch_loader(
            self.splits.train,
            data.batch_size,
            shuffle=True,
            generator=self.generator,
            num_workers=data.num_workers,
            drop_last=True,
        )
        self.val_loader = batch_loader(self.splits.val, data.batch_size, num_workers=data.num_workers)
        optim = config.optim
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        steps_per_epoch = len(self.train_loader)
        warmup = max(1, round(optim.warmup_epochs * steps_per_epoch))
        total = optim.epochs * steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total))
        self.use_amp = optim.amp and self.device.type == "cuda"

        self.state = TrainingState()
        if resume:
            self._restore()
        elif self.ddp.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for stale in ("metrics.jsonl", "last.pt", "best.pt", "bad_files.txt"):
                (self.run_dir / stale).unlink(missing_ok=True)
        self.board = None
        if self.ddp.main:
            save_config(config, self.run_dir / "config.yaml")
            if self.splits.bad_files:
                write_text(self.run_dir / "bad_files.txt", "\n".join(self.splits.bad_files) + "\n")
            self.board = _tensorboard(self.run_dir)

    # ------------------------------------------------------------------------------------------------ the run
    @property
    def finished(self) -> bool:
        optim = self.config.optim
        return self.state.epoch >= optim.epochs or self.state.stale_epochs >= optim.early_stopping_patience

    def fit(self) -> Path:
        """Run epochs until the budget or the early-stopping patience is spent; returns the run directory."""
        try:
            while not self.finished:
                self.run_epoch()
        finally:
            if self.board is not None:
                self.board.close()
        return self.run_dir

    def run_epoch(self) -> dict:
        """Train one epoch, validate (rank 0), write the checkpoints and the epoch's metrics row; return the row."""
        epoch_start = self.generator.get_state()  # replaying from here reproduces this epoch's order
        try:
            self.train_epoch()
        except KeyboardInterrupt:
            self.save_last(epoch_start)
            logger.warning("interrupted: saved %s (resume with --resume)", self.run_dir / "last.pt")
            raise
        state = self.state
        row = {"epoch": state.epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
        if state.seen:
            row.update(train_loss=state.loss_sum / state.seen, train_accuracy=state.correct / state.seen)
        if self.ddp.main:
            val = self.validate()
            row.update(val_accuracy=val["accuracy"], val_macro_auc=val["macro_auc"])
            if state.record_validation(val["macro_auc"]):
                save_checkpoint(
                    self.run_dir / "best.pt",
                    self.model,
                    self.config,
                    self.card,
                    metadata={"epoch": state.epoch + 1, "val_macro_auc": val["macro_auc"]},
                )
            self._log(row)
        state.next_epoch()
        self.save_last(self.generator.get_state())
        self.ddp.barrier()
        return row

    def train_epoch(self) -> None:
        """The optimisation steps of the current epoch; an interrupted epoch is replayed up to where it stopped."""
        self.network.train()
        epochs = self.config.optim.epochs
        if hasattr(self.splits.train, "set_epoch"):  # online simulation: this epoch's fresh images
            self.splits.train.set_epoch(self.state.epoch)
        bar = progress_bar(
            self.train_loader, desc=f"epoch {self.state.epoch + 1}/{epochs}", disable=not self.ddp.main, leave=False
        )
        for step, batch in enumerate(bar):
            # drawn for every batch, replayed ones too, so the random stream stays aligned on resume
            elements = random_elements(len(batch.labels), self.generator) if self.config.data.augment else None
            if step < self.state.step:
                continue
            self.train_step(self.augment(self.with_truth(batch), elements))
            state = self.state  # refresh=False: the bar redraws at its own pace (rarely, in a log file)
            bar.set_postfix(
                loss=f"{state.loss_sum / state.seen:.3f}", acc=f"{state.correct / state.seen:.3f}", refresh=False
            )

    def with_truth(self, batch: Batch) -> Batch:
        """The batch with the simulator's truth of its images, when the data has it and a supervised term is on."""
        if self.truth is None or not self.objective.supervised:
            return batch
        return batch._replace(truth=self.truth.targets(batch.index))

    @staticmethod
    def augment(batch: Batch, elements: torch.Tensor | None) -> Batch:
        """D4 element ``elements[i]`` (indices into ``D4_ELEMENTS``) applied to image ``i`` and to its truth (the
        substructure map as a scalar field, the macro lens by its parameter types): the one augmentation path."""
        if elements is None:
            return batch
        truth = batch.truth
        if truth is not None:
            macro = transform_each(
                truth.macro, elements, lambda v, g: transform_macro(MacroLens.from_tensor(v), g).as_tensor()
            )
            truth = Truth(macro, transform_each(truth.substructure, elements))
        return batch._replace(images=transform_each(batch.images, elements), truth=truth)

    def train_step(self, batch: Batch) -> None:
        """One optimisation step on this rank's slice of a global :class:`~d4lenspinn.data.Batch`."""
        batch = Batch(*(self.ddp.shard(t) if isinstance(t, torch.Tensor) else t for t in batch))
        if batch.truth is not None:
            batch = batch._replace(truth=Truth(*(self.ddp.shard(t) for t in batch.truth)))
        batch = batch.to(self.device)
        images, labels = batch.images, batch.labels
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            output = self.network(images)
            terms = self.objective(output, batch, self.state.epoch, self.model.grid if self.physics else None)
        loss = terms["total"]
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise TrainingDiverged(
                    f"loss term '{name}' became {value.item()} at epoch {self.state.epoch + 1}, step "
                    f"{self.state.step}; the last good checkpoint is {self.run_dir / 'last.pt'}"
                )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.network.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        correct = (output.logits.argmax(dim=1) == labels).sum().item()
        self.state.record_step(loss.item(), correct, labels.shape[0])

    def validate(self) -> dict:
        """Metrics of the model on the validation split (eval mode, no TTA)."""
        probabilities, targets = collect_predictions(self.model, self.val_loader, self.device)
        return classification_metrics(probabilities, targets, self.splits.class_names)

    # ---------------------------------------------------------------------------------------------- checkpoints
    def save_last(self, data_rng: torch.Tensor) -> None:
        """``last.pt`` (rank 0): weights, optimiser, scheduler, generators (``data_rng``: the data generator's state
        to replay from) and the training state."""
        if not self.ddp.main:
            return
        resume = ResumeState(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            torch_rng=torch.get_rng_state(),
            data_rng=data_rng,
            progress=asdict(self.state),
            cuda_rng=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        )
        save_checkpoint(self.run_dir / "last.pt", self.model, self.config, self.card, resume=resume)

    def _restore(self) -> None:
        path = self.run_dir / "last.pt"
        if not path.is_file():
            raise ValueError(f"--resume: no checkpoint {path} to continue from")
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint.resume is None:
            raise ValueError(f"--resume: {path} holds weights only (no optimiser or training state)")
        if checkpoint.config.model != self.config.model:
            raise ValueError(
                f"--resume: {path} was trained as model {asdict(checkpoint.config.model)}, the config asks for "
                f"{asdict(self.config.model)}"
            )
        load_weights(self.model, checkpoint.model_state, path)
        resume = checkpoint.resume
        self.optimizer.load_state_dict(resume.optimizer)
        self.scheduler.load_state_dict(resume.scheduler)
        torch.set_rng_state(resume.torch_rng)
        if resume.cuda_rng is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume.cuda_rng)
        self.generator.set_state(resume.data_rng)
        self.state = TrainingState(**resume.progress)

    def _prepare_data(self) -> DataSplits:
        if not self.ddp.main:
            self.ddp.barrier()  # rank 0 simulates or downloads first; the others then read what it wrote
        splits = prepare_data(self.config.data, seed=self.config.seed)
        if self.ddp.main:
            self.ddp.barrier()
        return splits

    def _log(self, row: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.board.add_scalar(key, value, row["epoch"])
            self.board.flush()
        logger.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()})


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train ``config.model`` on ``config.data`` (see :class:`Trainer`); returns the run directory."""
    return Trainer(config, resume=resume).fit()

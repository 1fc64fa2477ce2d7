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
Ctrl-C waits for the current step (or the end-of-epoch bookkeeping) to finish, saves ``last.pt`` at that point
and raises :class:`~d4lenspinn.interrupts.TrainingInterrupted` saying how to continue; ``resume=True`` restores model,
optimiser, scheduler, every random generator and the :class:`TrainingState`, and skips to the same batch of the same
epoch order, so an interrupted run ends with the same weights and metrics as an uninterrupted one, wherever it was
interrupted, for every registered model. A run directory holding another run is refused (``overwrite=True``
replaces it; :mod:`d4lenspinn.rundir`). A non-finite loss stops the run naming the term; the last good checkpoint
stays. Files dropped by ``data.skip_bad`` are listed in ``bad_files.txt``. Several processes: see
:mod:`d4lenspinn.distributed`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import ModelCard, ResumeState, load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig, save_config
from .data import Batch, DataSplits, batch_loader, prepare_data
from .device import resolve_device
from .distributed import Distributed
from .interrupts import TrainingInterrupted, deferred_interrupts
from .io import write_text
from .losses import Objective
from .metrics import classification_metrics
from .metrics_log import MetricsLog
from .models import capabilities_of, create_model
from .progress import progress_bar
from .resume import EpochBatches, capture_rng, restore_rng, seed_everything
from .rundir import claim_run_dir
from .symmetry import random_elements, transform_each
from .tta import collect_predictions

__all__ = ["train", "Trainer", "TrainingState", "TrainingDiverged", "TrainingInterrupted", "augment"]


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


def augment(batch: Batch, elements: torch.Tensor | None) -> Batch:
    """D4 element ``elements[i]`` (indices into ``D4_ELEMENTS``) applied to image ``i`` and to its truth
    (:meth:`~d4lenspinn.data.Truth.transform`): the one augmentation path."""
    if elements is None:
        return batch
    truth = None if batch.truth is None else batch.truth.transform(elements)
    return batch._replace(images=transform_each(batch.images, elements), truth=truth)


class Trainer:
    """One training run of ``config`` (``resume``: continue the run in ``config.out`` from its ``last.pt``;
    ``overwrite``: replace the run there)."""

    def __init__(self, config: TrainConfig, resume: bool = False, overwrite: bool = False) -> None:
        self.config, self.run_dir = config, Path(config.out)
        self.ddp = Distributed(resolve_device(config.device))
        self.device = self.ddp.device
        if config.data.batch_size % self.ddp.world:
            raise ValueError(
                f"data.batch_size {config.data.batch_size} must be divisible by the {self.ddp.world} processes"
            )
        if "pixel_scale" in config.model.kwargs:
            raise ValueError("model.kwargs.pixel_scale: set data.pixel_scale instead (the model takes the data's)")
        self.objective = Objective(config.loss, config.optim.label_smoothing)  # a loss-term typo fails before the data
        if self.ddp.main:
            claim_run_dir(self.run_dir, resume=resume, overwrite=overwrite)
        seed_everything(config.seed)
        self.splits = self._prepare_data()
        self.card = ModelCard(
            model=config.model.name,
            image_size=self.splits.image_size,
            pixel_scale=self.splits.pixel_scale,
            class_names=self.splits.class_names,
            training_data=self.splits.description,
            training_prior=self.splits.prior,
        )
        self.model = create_model(
            config.model.name,
            image_size=self.splits.image_size,
            pixel_scale=self.splits.pixel_scale,
            num_classes=len(self.splits.class_names),
            **config.model.kwargs,
        ).to(self.device)
        self.network = self.ddp.wrap(self.model)  # what the training steps call
        capabilities = capabilities_of(self.model)
        self.physics = capabilities.physics_maps
        self.truth = self.splits.truth["train"] if self.splits.truth is not None else None
        self.objective.check_model(config.model.name, capabilities.macro_lens, self.truth is not None)
        self._build_optimisation()

        self.state = TrainingState()
        self.epoch_start_rng = self.generator.get_state()  # the data generator where the current epoch begins
        self._torn = False  # whether a state change was cut short (then the state is not saved)
        if resume:
            self._restore()
        self.rng = capture_rng()  # the global generators after the last completed state change
        self.log = None
        if self.ddp.main:
            save_config(config, self.run_dir / "config.yaml")
            if self.splits.bad_files:
                write_text(self.run_dir / "bad_files.txt", "\n".join(self.splits.bad_files) + "\n")
            self.log = MetricsLog(self.run_dir, epochs_done=self.state.epoch)

    def _build_optimisation(self) -> None:
        """The seeded data order and loaders, AdamW and its warm-up + cosine schedule."""
        config, data, optim = self.config, self.config.data, self.config.optim
        self.generator = torch.Generator().manual_seed(config.seed)  # data order and augmentation
        self.batches = EpochBatches(len(self.splits.train), data.batch_size, self.generator)
        self.train_loader = batch_loader(
            self.splits.train, 1, batch_sampler=self.batches, generator=self.generator, num_workers=data.num_workers
        )
        self.val_loader = batch_loader(self.splits.val, data.batch_size, num_workers=data.num_workers)
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
        steps_per_epoch = len(self.train_loader)
        warmup = max(1, round(optim.warmup_epochs * steps_per_epoch))
        total = optim.epochs * steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warmup, total))
        self.use_amp = optim.amp and self.device.type == "cuda"

    # ------------------------------------------------------------------------------------------------ the run
    @property
    def finished(self) -> bool:
        optim = self.config.optim
        return self.state.epoch >= optim.epochs or self.state.stale_epochs >= optim.early_stopping_patience

    def fit(self) -> Path:
        """Run epochs until the budget or the early-stopping patience is spent; returns the run directory.

        Raises :class:`~d4lenspinn.interrupts.TrainingInterrupted` on Ctrl-C, after saving ``last.pt``."""
        try:
            while not self.finished:
                self.run_epoch()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            if self.log is not None:
                self.log.close()
        return self.run_dir

    def run_epoch(self) -> dict:
        """Train one epoch, validate (rank 0), write the checkpoints and the epoch's metrics row; return the row."""
        self.train_epoch()
        state = self.state
        row = {"epoch": state.epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
        if state.seen:
            row.update(train_loss=state.loss_sum / state.seen, train_accuracy=state.correct / state.seen)
        if self.ddp.main:
            val = self.validate()
            row.update(val_accuracy=val["accuracy"], val_macro_auc=val["macro_auc"])
        with self._atomic():
            self._end_epoch(row)
        self.ddp.barrier()
        return row

    def _end_epoch(self, row: dict) -> None:
        """Early-stopping bookkeeping, ``best.pt``, the metrics row, then the next epoch's ``last.pt``."""
        state = self.state
        if self.ddp.main:
            if state.record_validation(row["val_macro_auc"]):
                save_checkpoint(
                    self.run_dir / "best.pt",
                    self.model,
                    self.config,
                    self.card,
                    metadata={"epoch": state.epoch + 1, "val_macro_auc": row["val_macro_auc"]},
                )
            self.log.append(row)
        state.best_auc, state.stale_epochs = self.ddp.broadcast((state.best_auc, state.stale_epochs))  # stop together
        state.next_epoch()
        self.epoch_start_rng = self.generator.get_state()
        self.rng = capture_rng()
        self.save_last()

    def train_epoch(self) -> None:
        """The optimisation steps of the current epoch from ``state.step`` on (the same order and augmentation as
        an uninterrupted epoch: the batches before it are skipped, their augmentation still drawn)."""
        self.network.train()
        epochs = self.config.optim.epochs
        if hasattr(self.splits.train, "set_epoch"):  # online simulation: this epoch's fresh images
            self.splits.train.set_epoch(self.state.epoch)
        self.generator.set_state(self.epoch_start_rng)
        self.batches.skip = self.state.step
        bar = progress_bar(
            self.train_loader, desc=f"epoch {self.state.epoch + 1}/{epochs}", disable=not self.ddp.main, leave=False
        )
        batch_size = self.config.data.batch_size
        for step, batch in enumerate(bar):
            # drawn for every batch, skipped ones too, so the random stream stays aligned on resume
            elements = random_elements(batch_size, self.generator) if self.config.data.augment else None
            if step < self.state.step:
                continue
            batch = augment(self.with_truth(batch), elements)
            with self._atomic():
                self.train_step(batch)
            state = self.state  # refresh=False: the bar redraws at its own pace (rarely, in a log file)
            bar.set_postfix(
                loss=f"{state.loss_sum / state.seen:.3f}", acc=f"{state.correct / state.seen:.3f}", refresh=False
            )

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A change of the run's state made whole or not at all: Ctrl-C waits for its end; an exception inside it
        leaves the state torn, and a torn state is never saved."""
        with deferred_interrupts():
            self._torn = True
            yield
            self._torn = False
            self.rng = capture_rng()  # what happens until the next change (e.g. validation) is replayed on resume

    def with_truth(self, batch: Batch) -> Batch:
        """The batch with the simulator's truth of its images, when the data has it and a supervised term is on."""
        if self.truth is None or not self.objective.supervised:
            return batch
        return batch._replace(truth=self.truth.targets(batch.index))

    def train_step(self, batch: Batch) -> None:
        """One optimisation step on this rank's slice of a global :class:`~d4lenspinn.data.Batch`."""
        batch = self.ddp.shard_batch(batch).to(self.device)
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
    def save_last(self) -> None:
        """``last.pt`` (rank 0): weights, optimiser, scheduler, random generators (the global ones after the last
        completed state change, the data generator at the current epoch's start) and the training state."""
        if not self.ddp.main:
            return
        resume = ResumeState(
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=self.rng,
            data_rng=self.epoch_start_rng,
            progress=asdict(self.state),
        )
        save_checkpoint(self.run_dir / "last.pt", self.model, self.config, self.card, resume=resume)

    def _interrupted(self) -> TrainingInterrupted:
        """Save the run at its last completed step (unless a state change was cut short) and say how to resume."""
        last = self.run_dir / "last.pt"
        where = f"epoch {self.state.epoch + 1}, step {self.state.step}"
        if self._torn:
            kept = f"{last} (from before that step) is kept" if last.exists() else f"nothing was saved to {last}"
            return TrainingInterrupted(f"interrupted inside a training step at {where}: {kept}")
        self.save_last()
        if self.finished:
            return TrainingInterrupted(f"interrupted after the last epoch: the run is complete ({last})")
        command = f"d4lenspinn train --config {self.run_dir / 'config.yaml'} --resume"
        return TrainingInterrupted(f"interrupted at {where}: saved {last}; continue with: {command}")

    def _restore(self) -> None:
        path = self.run_dir / "last.pt"
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
        restore_rng(resume.rng)
        self.epoch_start_rng = resume.data_rng
        self.state = TrainingState(**resume.progress)

    def _prepare_data(self) -> DataSplits:
        if not self.ddp.main:
            self.ddp.barrier()  # rank 0 simulates or downloads first; the others then read what it wrote
        splits = prepare_data(self.config.data, seed=self.config.seed)
        if self.ddp.main:
            self.ddp.barrier()
        return splits


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train ``config.model`` on ``config.data`` (see :class:`Trainer`); returns the run directory."""
    return Trainer(config, resume=resume, overwrite=overwrite).fit()

"""The per-epoch metrics of a run: ``metrics.jsonl`` (one JSON object per epoch) and, when TensorBoard is installed,
scalars in ``tensorboard/``.

    log = MetricsLog(run_dir, epochs_done=0)
    log.append({"epoch": 1, "lr": 1e-3, "train_loss": 0.9, ...})
    log.close()

A resumed run opens the log with the epochs its ``last.pt`` counts: rows of later epochs (written before an interrupt
that came before the checkpoint) are dropped, so every epoch has exactly one row.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .io import write_text

__all__ = ["MetricsLog"]

logger = logging.getLogger(__name__)


def _tensorboard(run_dir: Path, purge_step: int | None):
    """A TensorBoard ``SummaryWriter`` into ``run_dir/tensorboard`` when TensorBoard is installed, else None;
    ``purge_step``: events from this step on are discarded (a resumed run writes them again)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=purge_step)


class MetricsLog:
    """Rows of the epochs of a run in ``run_dir``, ``epochs_done`` of them already logged."""

    def __init__(self, run_dir: Path, epochs_done: int) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if self.path.exists():
            rows = self.path.read_text().splitlines()[:epochs_done]
            write_text(self.path, "".join(row + "\n" for row in rows))
        self.board = _tensorboard(Path(run_dir), purge_step=epochs_done + 1 if epochs_done else None)

    def append(self, row: dict) -> None:
        """Log the row of epoch ``row["epoch"]``."""
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.board is not None:
            for key, value in row.items():
                if key != "epoch":
                    self.board.add_scalar(key, value, row["epoch"])
            self.board.flush()
        logger.info("epoch %d: %s", row["epoch"], {k: round(v, 4) for k, v in row.items()})

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

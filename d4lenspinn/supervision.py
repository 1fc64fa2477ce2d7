"""Which supervision a run can have: the supervised terms and the lens phase need a model with a macro lens, and the
supervised terms need data with the simulator's truth (without it they are switched off with one warning)."""

from __future__ import annotations

import logging

from .config import LossConfig

__all__ = ["check_supervision"]

logger = logging.getLogger(__name__)


def check_supervision(loss: LossConfig, model_name: str, macro_lens: bool, has_truth: bool) -> None:
    """Raise ``ValueError`` when ``loss`` asks for supervision model ``model_name`` cannot take (``macro_lens``:
    whether it estimates a macro lens); warn when the data has no truth (``has_truth``) for the supervised terms."""
    if loss.supervised and not macro_lens:
        raise ValueError(
            f"loss.macro / loss.substructure supervise a macro-lens estimate, which model {model_name!r} does not "
            "make; set them to 0"
        )
    if loss.lens_epochs and not (macro_lens and loss.supervised):
        raise ValueError(
            "loss.lens_epochs trains the lens alone, on the supervised terms: it needs a model with a macro lens "
            "and loss.macro or loss.substructure > 0"
        )
    if loss.supervised and not has_truth:
        logger.warning("the data has no simulator truth: the supervised terms (loss.macro, loss.substructure) are off")

"""The training objective: cross-entropy plus the weighted loss terms, on a schedule.

    objective = Objective(config.loss, label_smoothing=0.1)   # unknown term names fail here, before any data
    objective.check_model("d4lenspinn_lens", macro_lens=True, has_truth=True)
    terms = objective(output, batch, epoch, grid=model.grid)  # {"cross_entropy": ..., "tv": ..., "total": ...}
    terms["total"].backward()

The weights are the declared defaults (:func:`~d4lenspinn.losses.declared_terms`) updated by ``config.weights``;
a term is computed when its weight is nonzero and its inputs exist (a baseline without maps gets the cross-entropy
alone), and reported by name so that a non-finite value can be traced to its term. The schedule: during the lens
phase (the first ``config.lens_epochs`` epochs) the cross-entropy is reported but left out of the total, so the
lens is learned first; afterwards every term counts.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from . import terms as _builtin_terms  # noqa: F401  (declares the built-in terms)
from .inputs import TermInputs
from .registry import check_weights, declared_terms
from .supervised import classification_loss

if TYPE_CHECKING:
    from ..config import LossConfig
    from ..data import Batch
    from ..models.output import ModelOutput
    from ..physics import PixelGrid

__all__ = ["Objective"]

logger = logging.getLogger(__name__)


class Objective:
    """Cross-entropy (``label_smoothing`` in [0, 1)) plus the terms of ``config`` weighted, on its schedule."""

    def __init__(self, config: LossConfig, label_smoothing: float = 0.0) -> None:
        check_weights(config.weights)
        declared = declared_terms()
        self.weights = {name: config.weights.get(name, term.weight) for name, term in declared.items()}
        self.terms = {name: declared[name] for name, weight in self.weights.items() if weight != 0}
        self.lens_epochs, self.label_smoothing = config.lens_epochs, label_smoothing

    @property
    def supervised(self) -> list[str]:
        """Names of the switched-on terms that need the simulator's truth."""
        return [name for name, term in self.terms.items() if term.supervised]

    def lens_phase(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) is in the lens phase: the cross-entropy is left out of the total."""
        return epoch < self.lens_epochs

    def check_model(self, model: str, macro_lens: bool, has_truth: bool) -> None:
        """Refuse supervised terms or a lens phase for a model without a macro lens (``model``: its name, for the
        message) and a lens phase without supervised terms; warn that the supervised terms are off without truth."""
        supervised = ", ".join(f"loss.{name}" for name in self.supervised)
        if supervised and not macro_lens:
            raise ValueError(
                f"{supervised} supervise a macro-lens estimate, which model {model!r} does not make; set them to 0"
            )
        if self.lens_epochs and not (macro_lens and supervised):
            every = " or ".join(f"loss.{name}" for name, term in declared_terms().items() if term.supervised)
            raise ValueError(
                "loss.lens_epochs trains the lens alone, on the supervised terms: it needs a model with a macro lens "
                f"and {every} > 0"
            )
        if supervised and not has_truth:
            logger.warning("the data has no simulator truth: the supervised terms (%s) are off", supervised)

    def __call__(
        self,
        output: ModelOutput,
        batch: Batch,
        epoch: int,
        grid: PixelGrid | None = None,
        source_grid: PixelGrid | None = None,
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy, the applicable terms (unweighted) by name, and ``total``, the loss: the weighted terms
        plus the cross-entropy (detached and left out during the lens phase). ``batch``: a
        :class:`~d4lenspinn.data.Batch` (``images (B, 1, n, n)`` on ``grid``, ``labels (B,)``, optional truth);
        ``source_grid``: the engine's source plane (default ``grid``)."""
        lens_phase = self.lens_phase(epoch)
        cross_entropy = classification_loss(output.logits.float(), batch.labels, self.label_smoothing)
        inputs = TermInputs(output, batch.images, batch.truth, grid, source_grid)
        values = {name: term.compute(inputs) for name, term in self.terms.items() if inputs.available(term.needs)}
        # the physics and the supervised terms are summed apart, then together: this fixes the rounding of the total
        physics, supervised = output.logits.new_zeros(()), output.logits.new_zeros(())
        for name, value in values.items():
            if self.terms[name].supervised:
                supervised = supervised + self.weights[name] * value
            else:
                physics = physics + self.weights[name] * value
        weighted = physics + supervised
        return {
            "cross_entropy": cross_entropy.detach() if lens_phase else cross_entropy,
            **values,
            "total": weighted if lens_phase else cross_entropy + weighted,
        }

"""Training losses: pure loss functions, the loss terms declared by name, and the objective the trainer calls.

* :mod:`~d4lenspinn.losses.regularisers`, :mod:`~d4lenspinn.losses.relensing`,
  :mod:`~d4lenspinn.losses.supervised`: the loss functions, each a scalar tensor, the mean over the batch;
* :mod:`~d4lenspinn.losses.registry`: :class:`LossTerm` and the :func:`loss_term` decorator declaring a term (name,
  the inputs it needs, default weight); :mod:`~d4lenspinn.losses.terms`: the built-in terms (``tv``, ``l1``,
  ``centre``, ``poisson``, ``relensing``, ``consistency``, ``macro``, ``substructure``);
* :class:`Objective`: cross-entropy plus the weighted terms on the schedule of a
  :class:`~d4lenspinn.config.LossConfig` (the lens phase).

Example::

    from d4lenspinn.config import LossConfig
    from d4lenspinn.losses import Objective

    objective = Objective(LossConfig(weights={"relensing": 0.1}))
    terms = objective(model(batch.images), batch, epoch=0, grid=model.grid)
    terms["total"].backward()
    bad = [name for name, value in terms.items() if not torch.isfinite(value)]
"""

from .inputs import INPUT_NAMES, TermInputs
from .objective import Objective
from .registry import LossTerm, check_weights, declared_terms, loss_term, register_term
from .regularisers import centre_penalty, l1_sparsity, poisson_residual_loss, total_variation
from .relensing import (
    background_statistics,
    image_plane_coverage,
    lens_consistency_loss,
    light_second_moment,
    relensing_loss,
)
from .supervised import MACRO_TOLERANCES, classification_loss, macro_parameter_loss

__all__ = [
    "total_variation",
    "l1_sparsity",
    "centre_penalty",
    "poisson_residual_loss",
    "image_plane_coverage",
    "relensing_loss",
    "background_statistics",
    "light_second_moment",
    "lens_consistency_loss",
    "classification_loss",
    "macro_parameter_loss",
    "MACRO_TOLERANCES",
    "LossTerm",
    "loss_term",
    "register_term",
    "declared_terms",
    "check_weights",
    "TermInputs",
    "INPUT_NAMES",
    "Objective",
]

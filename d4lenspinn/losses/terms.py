"""The built-in loss terms, one declaration each (name, inputs, default weight) with the function computing it.

Physics terms, on the maps of a physics-informed model (``kappa`` dimensionless, angles in arcsec):

* ``tv``, ``l1``, ``centre``: :func:`total_variation`, :func:`l1_sparsity`, :func:`centre_penalty` of the mass map
  the network predicts (``delta_kappa`` on top of a macro lens, else ``kappa``), at the published D4LensPINN weights;
* ``poisson``: :func:`poisson_residual_loss`; ~0 whenever ``psi`` comes from our own solver, and skipped with a macro
  lens (its analytic potential and the FFT solve are exact, so the residual would measure only the display cap of
  the SIE centre);
* ``relensing``: :func:`relensing_loss` where the source is covered; absent from the published model (weight 0) and
  minimised by ``kappa = 0``;
* ``consistency``: :func:`lens_consistency_loss`, the self-supervised lens loss without that degenerate minimum
  (weight 0; for data without truth).

Supervised terms, on simulations (they need the truth) for models with a macro lens (weight 0: switched on by the
config):

* ``macro``: the :func:`macro_parameter_loss` ``total`` of the network's macro estimate (``macro_estimate`` where a
  fit refines it, else ``macro``) against the true macro lens;
* ``substructure``: the mean squared difference of ``delta_kappa`` and the true substructure convergence.

A new term is one function here (or anywhere imported before training) decorated with :func:`loss_term`.
"""

from __future__ import annotations

import torch

from ..physics import MacroLens
from .inputs import TermInputs
from .registry import loss_term
from .regularisers import centre_penalty, l1_sparsity, poisson_residual_loss, total_variation
from .relensing import lens_consistency_loss, relensing_loss
from .supervised import macro_parameter_loss

__all__: list[str] = []


@loss_term("tv", needs=("mass",), weight=0.005)
def _tv(inputs: TermInputs) -> torch.Tensor:
    return total_variation(inputs.mass)


@loss_term("l1", needs=("mass",), weight=0.001)
def _l1(inputs: TermInputs) -> torch.Tensor:
    return l1_sparsity(inputs.mass)


@loss_term("centre", needs=("mass",), weight=0.002)
def _centre(inputs: TermInputs) -> torch.Tensor:
    return centre_penalty(inputs.mass, inputs.grid)


@loss_term("poisson", needs=("psi", "network_kappa"), weight=0.01)
def _poisson(inputs: TermInputs) -> torch.Tensor:
    return poisson_residual_loss(inputs.psi, inputs.network_kappa, inputs.grid)


@loss_term("relensing", needs=("relensed",))
def _relensing(inputs: TermInputs) -> torch.Tensor:
    return relensing_loss(inputs.images, inputs.relensed, inputs.coverage)


@loss_term("consistency", needs=("relensed", "source", "coverage"))
def _consistency(inputs: TermInputs) -> torch.Tensor:
    i = inputs
    return lens_consistency_loss(i.images, i.relensed, i.source, i.coverage, i.grid, i.source_grid)


@loss_term("macro", needs=("macro", "truth"))
def _macro(inputs: TermInputs) -> torch.Tensor:
    predicted = inputs.macro if inputs.macro_estimate is None else inputs.macro_estimate  # a fit starts from it
    true = MacroLens.from_tensor(inputs.truth.macro.to(predicted.theta_e))
    return macro_parameter_loss(predicted, true, inputs.grid.pixel_scale)["total"]


@loss_term("substructure", needs=("delta_kappa", "truth"))
def _substructure(inputs: TermInputs) -> torch.Tensor:
    delta_kappa = inputs.delta_kappa
    return (delta_kappa - inputs.truth.substructure.to(delta_kappa)).square().mean()

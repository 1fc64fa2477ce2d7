"""What loss terms read: the model's maps, the batch's images and truth, and the grids, by input name."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import torch

from ..models.maps import KappaMaps
from ..physics import PixelGrid
from .relensing import image_plane_coverage

if TYPE_CHECKING:
    from ..data.truth import Truth
    from ..models.output import ModelOutput

__all__ = ["TermInputs", "INPUT_NAMES"]

INPUT_NAMES = (
    "images",
    "truth",
    "grid",
    "kappa",
    "psi",
    "alpha",
    "source",
    "source_weight",
    "relensed",
    "macro",
    "macro_estimate",
    "delta_kappa",
    "mass",
    "network_kappa",
    "coverage",
)
"""The names a :class:`~d4lenspinn.losses.LossTerm` may list in ``needs``: the attributes of :class:`TermInputs`."""


def _model_map(name: str) -> property:
    """A :class:`TermInputs` attribute reading the map ``name`` of the model's output (None where it has none)."""
    return property(lambda inputs: inputs._map(name), doc=f"the model's ``{name}`` map, or None")


class TermInputs:
    """The inputs of the loss terms for one batch; an input the model, the batch or the data does not have is None.

    ``images (B, 1, n, n)`` the model's inputs on ``grid``, ``truth`` the simulator's
    :class:`~d4lenspinn.data.Truth` of the batch, ``source_grid`` the engine's source plane (default ``grid``), and
    the maps of ``output`` (:class:`~d4lenspinn.models.ModelOutput`: ``kappa``, ``psi``, ``alpha``, ``source``,
    ``source_weight``, ``relensed``, ``macro``, ``delta_kappa``), plus three derived inputs: ``mass`` (the mass map
    the network predicts: ``delta_kappa`` on top of a macro lens, else ``kappa``), ``network_kappa`` (``kappa`` when
    the network predicts all of it, i.e. without a macro lens) and ``coverage`` (:func:`image_plane_coverage`,
    computed once per batch).
    """

    def __init__(
        self,
        output: ModelOutput,
        images: torch.Tensor,
        truth: Truth | None = None,
        grid: PixelGrid | None = None,
        source_grid: PixelGrid | None = None,
    ) -> None:
        self.output, self.images, self.truth, self.grid = output, images, truth, grid
        self.source_grid = source_grid

    def _map(self, name: str):
        """A map of the model's output, or None where the model makes no such map. Only the physics-informed maps
        (:class:`~d4lenspinn.models.maps.KappaMaps` and its subclasses) feed the physics terms."""
        maps = self.output.maps
        return getattr(maps, name, None) if isinstance(maps, KappaMaps) else None

    kappa = _model_map("kappa")
    psi = _model_map("psi")
    alpha = _model_map("alpha")
    source = _model_map("source")
    source_weight = _model_map("source_weight")
    relensed = _model_map("relensed")
    macro = _model_map("macro")
    macro_estimate = _model_map("macro_estimate")
    delta_kappa = _model_map("delta_kappa")

    def available(self, needs: tuple[str, ...]) -> bool:
        """Whether every input named in ``needs`` is there."""
        return all(getattr(self, name) is not None for name in needs)

    @property
    def mass(self) -> torch.Tensor | None:
        return self.kappa if self.delta_kappa is None else self.delta_kappa

    @property
    def network_kappa(self) -> torch.Tensor | None:
        return self.kappa if self.macro is None else None

    @cached_property
    def coverage(self) -> torch.Tensor | None:
        if self.source_weight is None or self.alpha is None:
            return None
        return image_plane_coverage(self.source_weight, self.alpha, self.grid, self.source_grid)

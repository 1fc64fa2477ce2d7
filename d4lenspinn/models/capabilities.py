"""What a model can do, declared by the model instead of guessed by its users.

Every model class sets a class attribute ``capabilities``; the trainer, the TTA, the evaluation and the
interpretability tools read it through :func:`capabilities_of` (which also looks through a
DistributedDataParallel wrapper)::

    caps = capabilities_of(model)
    if caps.physics_maps:                # forward returns maps on model.grid: the physics loss terms apply
        terms = objective(output, batch, epoch, grid=model.grid)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ModelCapabilities", "capabilities_of"]


@dataclass(frozen=True)
class ModelCapabilities:
    """Declared properties of a model class.

    physics_maps: ``ModelOutput.maps`` holds lensing maps (``alpha``, ``source``, ...) on ``model.grid`` (a
        :class:`~d4lenspinn.physics.PixelGrid`), so the physics losses apply.
    kappa_map: the maps are :class:`~d4lenspinn.models.maps.KappaMaps` with a predicted convergence ``kappa``.
    macro_lens: the maps are :class:`~d4lenspinn.models.maps.LensMaps`: ``macro`` estimates the smooth lens and
        ``delta_kappa`` the substructure convergence on top of it, so the supervised terms apply.
    equivariant_maps: the model is a :class:`~d4lenspinn.models.D4LensPINN` whose ``forward_features`` is
        D4-equivariant (``maps.transform(g)``) and whose ``head_channels`` are scalar fields named by
        ``head_channel_names``: TTA runs the features once and ``forward_head`` 8 times.
    invariant: the logits are D4-invariant by construction: TTA would average 8 equal predictions, so it is skipped.
    cam_layer: name of the module (with a plain ``(B, C, h, w)`` output) Grad-CAM should look at; ``None``: the last
    ``nn.Conv2d``.
    """

    physics_maps: bool = False
    kappa_map: bool = False
    macro_lens: bool = False
    equivariant_maps: bool = False
    invariant: bool = False
    cam_layer: str | None = None


def capabilities_of(model: nn.Module) -> ModelCapabilities:
    """The declared capabilities of ``model`` (or of the module a DDP wrapper holds); none declared: all off."""
    model = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return getattr(model, "capabilities", ModelCapabilities())

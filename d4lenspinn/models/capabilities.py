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

    physics_maps: ``forward`` returns lensing maps (``alpha``, ``source``, ...) on ``model.grid`` (a
        :class:`~d4lenspinn.physics.PixelGrid`), so the physics losses apply.
    kappa_map: ``ModelOutput.kappa`` is a predicted convergence map ``(B, 1, n, n)``.
    macro_lens: ``ModelOutput.macro`` estimates the smooth lens and ``ModelOutput.delta_kappa`` the substructure
        convergence on top of it, so the supervised terms (``loss.macro``, ``loss.substructure``) apply.
    equivariant_maps: the model exposes ``maps(images)``, ``head_input(maps)`` and ``head``, and everything before
        the head is D4-equivariant with scalar-field head inputs: TTA runs the maps once and the head 8 times.
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

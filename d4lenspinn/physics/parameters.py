"""Batches of named parameters as NamedTuples of ``(B,)`` tensors (:class:`~d4lenspinn.physics.MacroLens`,
:class:`~d4lenspinn.physics.SersicSource`): built from scalar values, packed to and from ``(B, P)`` columns."""

from __future__ import annotations

import torch

__all__ = ["broadcast_fields", "unpack_columns"]


def broadcast_fields(
    fields: tuple[str, ...], values: dict, batch: int, dtype: torch.dtype, device
) -> list[torch.Tensor]:
    """Every field's ``values[name]`` (default 0) as a ``(batch,)`` tensor, in ``fields`` order."""
    return [torch.as_tensor(values.get(name, 0.0), dtype=dtype, device=device).expand(batch).clone() for name in fields]


def unpack_columns(packed: torch.Tensor, fields: tuple[str, ...], what: str) -> tuple[torch.Tensor, ...]:
    """The ``(B,)`` columns of ``packed (B, len(fields))``; ``ValueError`` naming ``what`` for any other shape."""
    if packed.dim() != 2 or packed.shape[1] != len(fields):
        raise ValueError(f"packed {what} parameters must be (B, {len(fields)}), got {tuple(packed.shape)}")
    return packed.unbind(dim=1)

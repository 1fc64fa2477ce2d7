"""How D4 acts on a layer's output, by the kind of field it is.

* escnn ``GeometricTensor``: its own field type says how (regular fields: pixels move and the 8 channels of each
  field are permuted by the regular representation; trivial fields: pixels move). Our ``D4Element(k, flip)`` is
  escnn's element ``(flip, k)`` of ``flipRot2dOnR2(N=4)`` (tests/interp/test_equivariance.py checks the match).
* a plain ``(B, C, n, n)`` tensor: treated as ``C`` scalar fields (pixels move, values do not). This is the
  hypothesis under test for a non-equivariant layer, whose error is then large.
* a plain ``(B, C)`` tensor: invariant (the group acts trivially), e.g. logits.
* a :class:`~d4lenspinn.physics.MacroLens` (``(B,)`` parameters): as one quantity, each parameter by its D4 type
  (:func:`~d4lenspinn.symmetry.transform_macro`: theta_E invariant, the centre a vector, e and gamma spin-2).
* any other named tuple (the lensing engine's or a model's output): field by field; fields named in
  ``vector_fields`` (default ``alpha``, the deflection) are vector fields.
* anything else (token sequences, non-square maps): no D4 action is defined; :func:`transform_activation` returns None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from escnn import nn as enn

from d4lenspinn.physics import MacroLens
from d4lenspinn.symmetry import D4Element, transform_macro, transform_scalar, transform_vector

__all__ = ["field_kind", "transform_activation", "flatten_activation", "escnn_element"]

VECTOR_FIELDS = ("alpha",)


def escnn_element(gspace, g: D4Element):
    """The escnn group element of ``gspace`` (``flipRot2dOnR2(N=4)``) acting like ``g`` on the pixel grid."""
    if gspace.fibergroup.order() != 8:
        raise ValueError(f"expected the D4 gspace flipRot2dOnR2(N=4), got {gspace}")
    return gspace.fibergroup.element((int(g.flip), g.rotations))


def _is_square_map(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-1] == value.shape[-2]


def field_kind(value: Any, vector_fields: Sequence[str] = VECTOR_FIELDS) -> str:
    """A short description: ``escnn regular x8``, ``scalar x5``, ``invariant``, ``macro lens``, ``alpha: vector,
    ...`` or ``unsupported``."""
    if isinstance(value, MacroLens):
        return "macro lens"
    if isinstance(value, enn.GeometricTensor):
        names = sorted({r.name for r in value.type.representations})
        return f"escnn {'+'.join(names)} x{len(value.type)}"
    if _is_square_map(value):
        return f"scalar x{value.shape[1]}"
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        return "invariant"
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        parts = [
            f"{name}: {'vector' if name in vector_fields else field_kind(v, vector_fields)}"
            for name, v in zip(value._fields, value, strict=True)
            if v is not None
        ]
        return ", ".join(parts)
    return "unsupported"


def transform_activation(value: Any, g: D4Element, vector_fields: Sequence[str] = VECTOR_FIELDS) -> Any | None:
    """``g`` acting on ``value`` as described in the module docstring; None where no action is defined."""
    if isinstance(value, MacroLens):
        return transform_macro(value, g)
    if isinstance(value, enn.GeometricTensor):
        return value.transform(escnn_element(value.type.gspace, g))
    if _is_square_map(value):
        return transform_scalar(value, g)
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        return value
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        moved = []
        for name, field in zip(value._fields, value, strict=True):
            if field is None:
                moved.append(None)
                continue
            field = transform_vector(field, g) if name in vector_fields else transform_activation(field, g)
            if field is None:
                return None
            moved.append(field)
        return type(value)(*moved)
    return None


def flatten_activation(value: Any) -> torch.Tensor:
    """All numbers of an activation as one ``(B, D)`` tensor (named-tuple fields concatenated, None skipped)."""
    if isinstance(value, enn.GeometricTensor):
        value = value.tensor
    if isinstance(value, torch.Tensor):
        return value.reshape(value.shape[0], -1)
    if isinstance(value, tuple):
        return torch.cat([flatten_activation(v) for v in value if v is not None], dim=1)
    raise ValueError(f"cannot flatten an activation of type {type(value).__name__}")

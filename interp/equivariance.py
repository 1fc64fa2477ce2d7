"""Layer-by-layer D4 equivariance error of a model.

For each hooked layer ``f`` (the map from the input image to that layer's output) and each D4 element ``g``:

    error(f, g) = ||f(g x) - g . f(x)|| / ||f(x)||        (Frobenius norms over the whole batch)

with ``g .`` acting on the output as the kind of field it is (:mod:`interp.fields`). The model's own output is the
last rows, ``output.logits``, ``output.kappa``, ... Expected for D4LensPINN: float precision (~1e-7 to 1e-6)
through the preprocessing, the escnn U-Net and the physics engine; order one inside the timm head, which is not
equivariant.

    rows = equivariance_errors(model, images)                       # one row per (layer, element)
    print(format_equivariance_table(rows)); plot_equivariance(rows, "equivariance.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass

import numpy as np
import torch
from torch import nn

from d4lenspinn.physics import MacroLens
from d4lenspinn.plots import save_figure
from d4lenspinn.symmetry import D4_ELEMENTS, D4Element, transform_scalar, transform_vector

from .fields import VECTOR_FIELDS, field_kind, flatten_activation, transform_activation
from .hooks import capture, default_layers, eval_mode

__all__ = ["equivariance_errors", "summarise_equivariance", "format_equivariance_table", "plot_equivariance"]

OUTPUT = "output"


@torch.no_grad()
def equivariance_errors(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str] | None = None,
    elements: Sequence[D4Element] = D4_ELEMENTS,
    vector_fields: Sequence[str] = VECTOR_FIELDS,
) -> list[dict]:
    """Rows ``{layer, kind, element, error}`` in forward order, in eval mode (the model's mode is restored).

    ``images (B, C, n, n)``; ``layers`` default to :func:`interp.hooks.default_layers`. A named-tuple output (the
    lensing engine's, the model's) gives one row per field, ``engine.alpha``; fields named in ``vector_fields`` are
    vector fields. Outputs with no D4 action (token sequences) get ``error = nan`` and kind ``unsupported``. Layers
    that did not run are left out.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square (B, C, n, n), got shape {tuple(images.shape)}")
    layers = list(default_layers(model) if layers is None else layers)
    with eval_mode(model):
        with capture(model, layers + [""]) as reference:
            model(images)
        order = list(reference)  # hooks fire in forward order
        rows = []
        for g in elements:
            with capture(model, order) as moved:
                model(transform_scalar(images, g))
            for layer in order:
                for name, field, before, after in _parts(layer or OUTPUT, reference[layer], moved[layer]):
                    vector = field in vector_fields
                    expected = transform_vector(before, g) if vector else transform_activation(before, g)
                    error = float("nan")
                    if expected is not None:
                        base = flatten_activation(before).double()
                        diff = flatten_activation(after).double() - flatten_activation(expected).double()
                        error = (diff.norm() / base.norm().clamp_min(1e-30)).item()
                    kind = "vector x1" if vector else field_kind(before)
                    rows.append({"layer": name, "kind": kind, "element": str(g), "error": error})
    return rows


def _parts(name: str, before, after):
    """``(name, field, reference, moved)`` per measured quantity: a named tuple gives one per field
    (``engine.alpha``, field ``alpha``), as does a model's typed maps object (``output.kappa``: the maps are
    named as fields of the output), anything else (a macro lens too) itself (field None)."""
    if isinstance(before, tuple) and hasattr(before, "_fields") and not isinstance(before, MacroLens):
        for field, a, b in zip(before._fields, before, after, strict=True):
            if a is not None:
                yield from _parts(name, a, b) if is_dataclass(a) else [(f"{name}.{field}", field, a, b)]
    elif is_dataclass(before):  # a model's typed maps (d4lenspinn.models.maps): one row per field
        for field in fields(before):
            if getattr(before, field.name) is not None:
                yield f"{name}.{field.name}", field.name, getattr(before, field.name), getattr(after, field.name)
    else:
        yield name, None, before, after


def summarise_equivariance(rows: list[dict]) -> list[dict]:
    """Per layer (forward order): kind, max and mean error over the non-identity elements, and the worst element."""
    summary: dict[str, dict] = {}
    for row in rows:
        if row["element"] == str(D4_ELEMENTS[0]):
            continue
        entry = summary.setdefault(row["layer"], {"layer": row["layer"], "kind": row["kind"], "errors": {}})
        entry["errors"][row["element"]] = row["error"]
    out = []
    for entry in summary.values():
        errors = entry.pop("errors")
        values = np.array(list(errors.values()))
        finite = not np.isnan(values).any()
        worst = max(errors, key=errors.get) if finite else "-"
        out.append({**entry, "max": float(values.max()), "mean": float(values.mean()), "worst": worst})
    return out


def format_equivariance_table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarise_equivariance`: layer, field kind, max and mean relative error."""
    lines = ["| layer | output field | max error | mean error | worst element |", "|---|---|---:|---:|---|"]
    for entry in summarise_equivariance(rows):
        lines.append(
            f"| `{entry['layer']}` | {entry['kind']} | {entry['max']:.2e} | {entry['mean']:.2e} | {entry['worst']} |"
        )
    return "\n".join(lines)


def plot_equivariance(rows: list[dict], path, title: str = "", floor: float = 1e-10):
    """Relative equivariance error per layer (log scale), one marker per non-identity element; values below
    ``floor`` (exact zeros included) are drawn at ``floor``."""
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(row["layer"] for row in rows))
    elements = [str(g) for g in D4_ELEMENTS[1:]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(layers) + 2), 4.2), constrained_layout=True)
    markers = "os^vD<>p"
    for index, element in enumerate(elements):
        values = {row["layer"]: row["error"] for row in rows if row["element"] == element}
        y = np.array([values.get(layer, np.nan) for layer in layers], dtype=float)
        ax.plot(np.arange(len(layers)), np.maximum(y, floor), markers[index], ms=4, alpha=0.75, label=element)
    ax.axhline(1e-6, color="grey", ls=":", lw=0.8)
    ax.text(len(layers) - 0.5, 1.3e-6, "float32 level", ha="right", va="bottom", fontsize=7, color="grey")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(layers)), layers, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel(r"$\|f(gx) - g f(x)\| / \|f(x)\|$")
    ax.set_title(title or "D4 equivariance error per layer")
    ax.legend(fontsize=7, ncol=2, title="element g", title_fontsize=7)
    return save_figure(fig, path)

"""Activation patching: which layers carry the information that separates a clean input from a corrupted one.

For pairs ``(clean_i, corrupted_i)`` and the logit difference ``m(x) = logit_target(x) - logit_reference(x)``, the
corrupted pass is re-run with one layer's output replaced by its clean value, giving ``m_patched``. The layer's
normalised effect is

    effect = sum_i (m_patched_i - m_corrupted_i) / sum_i (m_clean_i - m_corrupted_i)

so 0 = no effect and 1 = the clean output fully recovered (a ratio of sums, stable where single pairs have a tiny
gap). The 95% interval resamples pairs (bootstrap). Two sanity checks run every time and raise
:class:`PatchingSanityError` when they fail: patching a layer with its own corrupted activation changes nothing,
and patching the final layer (the last one whose output is the logits) recovers the clean output exactly (effect 1).

    clean, corrupted, _ = substructure_pairs(preset, label=1, count=64)
    result = activation_patching(model, clean, corrupted, target=1, reference=0)
    result.rows()                                   # [{layer, effect, low, high}, ...] in forward order
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from d4lenspinn.plots import save_figure

from .hooks import capture, default_layers, eval_mode, patch

__all__ = ["PatchingResult", "PatchingSanityError", "activation_patching", "plot_patching"]


class PatchingSanityError(RuntimeError):
    """A built-in patching sanity check failed (the hooks or the metric are not doing what they should)."""


@dataclass
class PatchingResult:
    """Metrics of every pair (``(N,)`` arrays; ``patched`` is ``(L, N)``) and the normalised effect per layer."""

    layers: list[str]
    clean: np.ndarray
    corrupted: np.ndarray
    patched: np.ndarray
    effect: np.ndarray  # (L,)
    ci95: np.ndarray  # (L, 2)
    gap_ci95: tuple[float, float]  # interval of the mean clean - corrupted logit difference
    final_layer: str
    self_patch_max_change: float

    def rows(self) -> list[dict]:
        return [
            {"layer": layer, "effect": float(e), "low": float(low), "high": float(high)}
            for layer, e, (low, high) in zip(self.layers, self.effect, self.ci95, strict=True)
        ]


def _metric(logits: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    rows = torch.arange(logits.shape[0])
    return (logits[rows, target] - logits[rows, reference]).double().cpu().numpy()


def _class_index(value: int | Sequence[int] | torch.Tensor, n: int, name: str) -> torch.Tensor:
    index = torch.as_tensor(value, dtype=torch.long)
    if index.dim() == 0:
        index = index.expand(n)
    if index.shape != (n,):
        raise ValueError(f"{name} must be a class index or one per pair ({n}), got shape {tuple(index.shape)}")
    return index


@torch.no_grad()
def activation_patching(
    model: nn.Module,
    clean: torch.Tensor,
    corrupted: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    reference: int | Sequence[int] | torch.Tensor,
    layers: Sequence[str] | None = None,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    seed: int = 0,
    tolerance: float = 1e-4,
) -> PatchingResult:
    """Patch every layer's clean output into the corrupted pass, for pairs ``clean, corrupted (N, C, n, n)``.

    ``target`` / ``reference``: the classes whose logit difference is measured (one index, or one per pair).
    ``layers`` default to :func:`interp.hooks.default_layers`; layers that do not run are dropped. Runs in eval
    mode (restored afterwards). ``tolerance``: allowed change of the logit difference in the sanity checks,
    relative to the mean absolute clean-corrupted gap.
    """
    if clean.shape != corrupted.shape:
        raise ValueError(
            f"clean and corrupted must have the same shape, got {tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    n = clean.shape[0]
    target, reference = _class_index(target, n, "target"), _class_index(reference, n, "reference")
    layers = list(default_layers(model) if layers is None else layers)
    with eval_mode(model):
        clean_m, corrupted_m, patched, self_change = [], [], [], 0.0
        order, final = None, None
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            with capture(model, layers) as clean_acts:
                clean_logits = model(clean[part]).logits
            with capture(model, layers) as corrupted_acts:
                corrupted_logits = model(corrupted[part]).logits
            if order is None:
                order = list(clean_acts)  # forward order, only the layers that ran
                final = _final_layer(clean_acts, clean_logits) or order[-1]
            clean_m.append(_metric(clean_logits, target[part], reference[part]))
            corrupted_m.append(_metric(corrupted_logits, target[part], reference[part]))
            rows = []
            for layer in order:
                with patch(model, {layer: clean_acts[layer]}):
                    rows.append(_metric(model(corrupted[part]).logits, target[part], reference[part]))
                if start == 0:  # self-patching sanity check, on the first batch
                    with patch(model, {layer: corrupted_acts[layer]}):
                        again = _metric(model(corrupted[part]).logits, target[part], reference[part])
                    self_change = max(self_change, float(np.abs(again - corrupted_m[-1]).max()))
            patched.append(np.stack(rows))
    clean_m, corrupted_m, patched = np.concatenate(clean_m), np.concatenate(corrupted_m), np.concatenate(patched, 1)
    effect, ci95, gap_ci = _effects_with_intervals(clean_m, corrupted_m, patched, n_bootstrap, seed)
    result = PatchingResult(order, clean_m, corrupted_m, patched, effect, ci95, gap_ci, final, self_change)
    _check_sanity(result, tolerance)
    return result


def _final_layer(activations: dict, logits: torch.Tensor) -> str | None:
    """The last layer (forward order) whose output is exactly the model's logits."""
    matches = [
        name
        for name, value in activations.items()
        if isinstance(value, torch.Tensor) and value.shape == logits.shape and torch.equal(value, logits)
    ]
    return matches[-1] if matches else None


def _effects_with_intervals(clean, corrupted, patched, n_bootstrap: int, seed: int):
    gap = clean - corrupted
    if abs(gap.sum()) < 1e-12:
        raise ValueError("clean and corrupted inputs give the same logit difference: the effect is undefined")
    effect = (patched - corrupted).sum(axis=1) / gap.sum()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gap), size=(n_bootstrap, len(gap)))
    boot = (patched - corrupted)[:, draws].sum(axis=2) / gap[draws].sum(axis=1)  # (L, n_bootstrap)
    ci95 = np.percentile(boot, [2.5, 97.5], axis=1).T
    gap_ci = tuple(float(v) for v in np.percentile(gap[draws].mean(axis=1), [2.5, 97.5]))
    return effect, ci95, gap_ci


def _check_sanity(result: PatchingResult, tolerance: float) -> None:
    scale = max(float(np.abs(result.clean - result.corrupted).mean()), 1e-12)
    if result.self_patch_max_change > tolerance * scale:
        raise PatchingSanityError(
            f"patching a layer with its own activation changed the logit difference by "
            f"{result.self_patch_max_change:.3g} (mean gap {scale:.3g})"
        )
    final = result.effect[result.layers.index(result.final_layer)]
    if abs(final - 1) > tolerance:
        raise PatchingSanityError(f"patching the final layer {result.final_layer!r} gave effect {final:.6f}, not 1")


def plot_patching(results: dict[str, PatchingResult], path, title: str = ""):
    """Normalised effect per layer with its 95% interval, one series per pair kind (the dict's keys), on a -0.5 to
    1.5 axis. A kind whose clean - corrupted gap is not significant (its interval contains 0, so the effect is
    ill-defined) is not drawn; a note under the axis names it."""
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(layer for r in results.values() for layer in r.layers))
    drawn = {label: r for label, r in results.items() if not r.gap_ci95[0] <= 0 <= r.gap_ci95[1]}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(layers) + 2), 4.4), constrained_layout=True)
    width = 0.8 / max(1, len(drawn))
    for k, (label, r) in enumerate(drawn.items()):
        x = np.array([layers.index(layer) for layer in r.layers]) + (k - (len(drawn) - 1) / 2) * width
        errors = np.abs(r.ci95.T - r.effect)
        ax.errorbar(x, r.effect, yerr=errors, fmt="o", ms=4, capsize=2, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.5, 1.5)
    ax.set_xticks(np.arange(len(layers)), layers, rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("normalised patching effect\n(0 none, 1 full recovery)")
    ax.set_title(title or "activation patching")
    skipped = [label for label in results if label not in drawn]
    if skipped:
        ax.set_xlabel(f"not drawn (clean - corrupted gap not significant, effect ill-defined): {', '.join(skipped)}")
    if drawn:
        ax.legend(fontsize=8)
    return save_figure(fig, path)

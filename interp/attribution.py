"""Input attributions (Integrated Gradients, Grad-CAM) and a test of whether the predicted kappa finds substructure.

ig, delta = integrated_gradients(model, images, target=1)          # (B, 1, H, W), completeness error (B,)
cam = grad_cam(model, images, target=1)                           # (B, 1, H, W) >= 0, layer default_cam_layer
plot_attributions(images, {"IG": ig, "Grad-CAM": cam}, "runs/x/attributions.png")

sample = sample_lenses(preset, label=1, count=32, generator=torch.Generator().manual_seed(0))
result = kappa_localisation(predicted_kappa(model), sample, preset)
result["mean_r"], result["control_mean_r"]                        # Pearson r: own vs another image's truth
plot_kappa_localisation(result, "runs/x/kappa_localisation.png")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from escnn import nn as enn
from scipy.ndimage import gaussian_filter
from torch import nn

from d4lenspinn.data.presets import SimulationPreset
from d4lenspinn.data.simulator import LensSample, true_convergence
from d4lenspinn.models import capabilities_of
from d4lenspinn.plots import save_figure

from .hooks import eval_mode, resolve_layers
from .pairs import render_pairs

__all__ = [
    "integrated_gradients",
    "default_cam_layer",
    "grad_cam",
    "predicted_kappa",
    "kappa_localisation",
    "plot_attributions",
    "plot_kappa_localisation",
]


def _target(target: int | torch.Tensor, images: torch.Tensor) -> int | torch.Tensor:
    """An int, or a ``(B,)`` int64 tensor on the images' device (as captum indexes the logits with it)."""
    if isinstance(target, torch.Tensor):
        if target.shape != (len(images),):
            raise ValueError(
                f"target must be an int or a ({len(images)},) tensor of classes, got {tuple(target.shape)}"
            )
        return target.to(images.device, torch.int64)
    return int(target)


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor,
    baseline: torch.Tensor | None = None,
    n_steps: int = 64,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients of the ``target`` logit with respect to ``images (B, C, H, W)`` (on the model's device).

    ``baseline`` defaults to zeros (a black image); a given one has the images' shape or ``(1, C, H, W)``.
    ``target`` is a class index or a ``(B,)`` tensor of them. The path integral uses ``n_steps`` Gauss-Legendre
    points; ``internal_batch_size`` bounds how many of the ``B * n_steps`` path images go through the model at once.
    The model runs in eval mode and gets its train/eval mode back afterwards.

    Returns detached ``attributions (B, C, H, W)`` (logit units per pixel) and ``delta (B,)``, the completeness
    error ``sum(attributions) - (F(x) - F(baseline))`` with ``F`` the target logit: it shrinks as ``n_steps`` grows.
    """
    if baseline is None:
        baseline = torch.zeros_like(images)
    elif baseline.shape not in (images.shape, (1, *images.shape[1:])):
        raise ValueError(
            f"baseline must have the images' shape {tuple(images.shape)} or (1, *{tuple(images.shape[1:])}), "
            f"got {tuple(baseline.shape)}"
        )
    with eval_mode(model):
        attributions, delta = IntegratedGradients(lambda x: model(x).logits).attribute(
            images,
            baselines=baseline.expand_as(images).to(images),
            target=_target(target, images),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
    return attributions.detach(), delta.detach()


def default_cam_layer(model: nn.Module) -> str:
    """The layer the model declares for Grad-CAM (``capabilities.cam_layer``; D4LensPINN: the last conv of its
    EfficientNetV2 head), else the name of the model's last ``nn.Conv2d`` in ``named_modules`` order."""
    declared = capabilities_of(model).cam_layer
    if declared is not None:
        return declared
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer for Grad-CAM; name a layer explicitly")
    return convs[-1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor,
    layer: str | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """Grad-CAM of the ``target`` logit at the named layer, upsampled (bilinear) to the images: ``(B, 1, H, W)``.

    The layer (default :func:`default_cam_layer`) must output a plain ``(B, C, h, w)`` tensor; its channels are
    weighted by their spatially averaged gradients and summed; ``relu`` keeps only the positive evidence (the usual
    Grad-CAM). The model runs in eval mode and gets its train/eval mode back afterwards. Detached, on the images'
    device (which must be the model's).
    """
    name = default_cam_layer(model) if layer is None else layer
    module = resolve_layers(model, [name])[name]
    if isinstance(module, enn.EquivariantModule):
        raise ValueError(f"layer {name!r} outputs an escnn GeometricTensor; Grad-CAM needs a layer with tensor output")
    with eval_mode(model):
        cam = LayerGradCam(lambda x: model(x).logits, module).attribute(
            images, target=_target(target, images), relu_attributions=relu
        )
    if cam.dim() != 4:
        raise ValueError(f"layer {name!r} gave a Grad-CAM map of shape {tuple(cam.shape)}; need a (B, C, h, w) output")
    return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear").detach()


def predicted_kappa(
    model: nn.Module, batch_size: int = 64, field: str = "kappa"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``images (B, 1, n, n) -> kappa (B, 1, n, n)`` (CPU) of a model whose output has a ``kappa`` map (``field``:
    another map of its output, e.g. ``delta_kappa``, the substructure convergence of a model with a macro lens).

    Each call runs the model in eval mode without gradients, ``batch_size`` images at a time on its device, and
    restores its train/eval mode. A model without that map (the baselines) raises ``ValueError`` on the call.
    """
    name = getattr(model, "name", type(model).__name__)
    device = next(model.parameters(), torch.empty(0)).device

    def predict(images: torch.Tensor) -> torch.Tensor:
        kappas = []
        with eval_mode(model), torch.no_grad():
            for start in range(0, len(images), batch_size):
                kappa = getattr(model(images[start : start + batch_size].to(device)).maps, field, None)
                if kappa is None:
                    raise ValueError(f"model {name!r} predicts no {field} map (its ModelOutput.maps has none)")
                kappas.append(kappa.cpu())
        return torch.cat(kappas)

    return predict


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image Pearson correlation of maps ``(B, ...)``; NaN where either map is constant."""
    a = a.reshape(len(a), -1) - a.reshape(len(a), -1).mean(axis=1, keepdims=True)
    b = b.reshape(len(b), -1) - b.reshape(len(b), -1).mean(axis=1, keepdims=True)
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.divide((a * b).sum(axis=1), norm, out=np.full(len(a), np.nan), where=norm > 0)


def _finite_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")


def kappa_localisation(
    predict_kappa: Callable[[torch.Tensor], torch.Tensor],
    sample: LensSample,
    preset: SimulationPreset,
    seed: int = 0,
    smoothing_pixels: float = 1.5,
) -> dict[str, Any]:
    """Does the predicted convergence put the substructure where it is? Pearson r between predicted and true maps.

    Each lens of ``sample`` (all must have substructure: labels 1 or 2) is rendered with its substructure (``x_sub``)
    and without it (``x_smooth``: same lens, source and noise seed ``seed``). The predicted substructure map is
    ``predict_kappa(x_sub) - predict_kappa(x_smooth)`` (two calls, in that order; ``predict_kappa`` maps images
    ``(B, 1, n, n)`` to kappa ``(B, 1, n, n)``, e.g. :func:`predicted_kappa`), the true one is
    ``true_convergence(sample) - true_convergence(smooth)``: point masses deposited on single pixels (subhalos) or a
    thin line (vortex). Such a map correlates poorly with anything but itself, so both maps are smoothed by the same
    Gaussian of ``smoothing_pixels`` sigma [pixels] (0: not smoothed) before comparing: a prediction that puts the
    mass within about a sigma of the truth scores high (the true map itself scores 1). The control correlates each
    prediction with the true map of another lens of the batch (rolled by one): a prediction that only marks generic
    places (the arcs, the centre) scores about as well there, so the gap ``r - control_r`` is the evidence of
    localisation. Every vortex passes through the lens centre, so vortices have a high control r.

    Returns numpy arrays: ``r``, ``control_r`` ``(B,)`` (NaN where a map is constant), ``images`` (``x_sub``), the
    smoothed ``predicted`` and ``true`` maps ``(B, 1, n, n)``, ``labels (B,)``; floats ``mean_r``,
    ``control_mean_r`` (means over finite values) and ``smoothing_pixels``.
    """
    if len(sample) < 2:
        raise ValueError(f"need at least 2 lenses (the control pairs each with another), got {len(sample)}")
    if smoothing_pixels < 0:
        raise ValueError(f"smoothing_pixels must be >= 0, got {smoothing_pixels}")
    has_substructure = (sample.subhalo_mass > 0).any(dim=1) | (sample.vortex_mass > 0)
    if not has_substructure.all():
        missing = torch.nonzero(~has_substructure).flatten().tolist()
        raise ValueError(
            f"lenses {missing[:10]} (labels {sample.label[missing[:10]].tolist()}) have no substructure; kappa "
            "localisation needs lenses with subhalos or a vortex (labels 1 or 2)"
        )
    smooth = sample.without_substructure()
    x_sub, x_smooth = render_pairs(sample, preset, noise_seed=seed)
    kappa_sub, kappa_smooth = predict_kappa(x_sub), predict_kappa(x_smooth)
    if kappa_sub.shape != x_sub.shape or kappa_smooth.shape != x_sub.shape:
        raise ValueError(
            f"predict_kappa must return kappa of the images' shape {tuple(x_sub.shape)}, got "
            f"{tuple(kappa_sub.shape)} and {tuple(kappa_smooth.shape)}"
        )
    predicted = (kappa_sub.detach().cpu().double() - kappa_smooth.detach().cpu().double()).numpy()
    true = (true_convergence(sample, preset) - true_convergence(smooth, preset)).numpy()
    if smoothing_pixels > 0:
        sigma = (0, 0, smoothing_pixels, smoothing_pixels)
        predicted = gaussian_filter(predicted, sigma=sigma, mode="constant")
        true = gaussian_filter(true, sigma=sigma, mode="constant")
    r = _pearson(predicted, true)
    control_r = _pearson(predicted, np.roll(true, 1, axis=0))
    return {
        "r": r,
        "mean_r": _finite_mean(r),
        "control_r": control_r,
        "control_mean_r": _finite_mean(control_r),
        "images": x_sub.numpy(),
        "predicted": predicted,
        "true": true,
        "labels": sample.label.numpy(),
        "smoothing_pixels": float(smoothing_pixels),
    }


def _as_maps(array: Any, name: str, count: int | None = None) -> np.ndarray:
    array = np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array, dtype=np.float64)
    if array.ndim != 4 or array.shape[1] != 1 or (count is not None and len(array) != count):
        expected = f"({count if count is not None else 'N'}, 1, H, W)"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
    return array


def plot_attributions(
    images: Any, attributions: dict[str, Any], path: str | Path, titles: Sequence[str] | None = None
) -> Path:
    """One row per image ``(N, 1, H, W)``: the image, then one column per attribution method ``(N, 1, H, W)``.

    A method with any negative value (Integrated Gradients) is drawn with a diverging colormap symmetric about 0,
    a non-negative one (Grad-CAM) with ``magma``; each panel has its own colour scale. ``titles`` (``N`` strings)
    label the image column. Arrays may be numpy arrays or tensors.
    """
    images = _as_maps(images, "images")
    maps = {
        method: _as_maps(values, f"attributions[{method!r}]", len(images)) for method, values in attributions.items()
    }
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must have one entry per image ({len(images)}), got {len(titles)}")
    signed = {method: bool((values < 0).any()) for method, values in maps.items()}
    columns = ["image", *maps]
    fig, axes = plt.subplots(
        len(images), len(columns), figsize=(2.6 * len(columns), 2.4 * len(images)), squeeze=False, layout="constrained"
    )
    for i, row in enumerate(axes):
        for ax, column in zip(row, columns, strict=True):
            if column == "image":
                data, cmap, limits = images[i, 0], "viridis", (None, None)
                title = titles[i] if titles is not None else f"image #{i}"
            elif signed[column]:
                data = maps[column][i, 0]
                limit = max(float(np.abs(data).max()), 1e-12)
                cmap, limits, title = "RdBu_r", (-limit, limit), column
            else:
                data, cmap, limits, title = maps[column][i, 0], "magma", (0, None), column
            shown = ax.imshow(data, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_title(title, fontsize=8)
            ax.set(xticks=[], yticks=[])
            fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    return save_figure(fig, path)


def plot_kappa_localisation(result: dict[str, Any], path: str | Path, n: int = 4) -> Path:
    """The first ``n`` lenses of a :func:`kappa_localisation` result, one row each: image, predicted substructure
    kappa (diverging, symmetric about 0, with Pearson r in the title), true substructure kappa (both smoothed as in
    the result); then a histogram of r over all lenses against the control (another lens's true map)."""
    count = min(n, len(result["r"]))
    if count < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    mosaic = [[f"{i}.{j}" for j in range(3)] for i in range(count)] + [["hist"] * 3]
    fig, axes = plt.subplot_mosaic(
        mosaic,
        figsize=(8.4, 2.5 * count + 2.8),
        height_ratios=[1] * count + [1.1],
        layout="constrained",
    )
    sigma = result["smoothing_pixels"]
    for i in range(count):
        predicted = result["predicted"][i, 0]
        limit = max(float(np.abs(predicted).max()), 1e-12)
        panels = (
            (result["images"][i, 0], "viridis", (None, None), f"#{i} class {result['labels'][i]}: image"),
            (predicted, "RdBu_r", (-limit, limit), f"predicted kappa(sub) - kappa(smooth)\nr = {result['r'][i]:.2f}"),
            (result["true"][i, 0], "magma", (None, None), "true substructure kappa"),
        )
        for j, (data, cmap, limits, title) in enumerate(panels):
            ax = axes[f"{i}.{j}"]
            shown = ax.imshow(data, origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_title(title, fontsize=8)
            ax.set(xticks=[], yticks=[])
            fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    ax = axes["hist"]
    bins = np.linspace(-1, 1, 41)
    for key, mean, label in (("r", "mean_r", "own lens"), ("control_r", "control_mean_r", "control: another lens")):
        values = result[key][np.isfinite(result[key])]
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} (mean {result[mean]:.2f})")
    ax.set(xlabel="Pearson r, predicted vs true substructure kappa", ylabel="lenses")
    ax.legend(fontsize=8)
    fig.suptitle(f"substructure convergence, both maps smoothed by a Gaussian of sigma {sigma:g} px", fontsize=10)
    return save_figure(fig, path)

"""D4LensPINN: preprocessing -> trunk (U-Net, lensing physics) -> typed maps -> named head channels -> head.

Two kinds of trunk, each a small class; the U-Nets are escnn D4-equivariant or plain (``equivariant=False``, the
"vanilla" control of similar size), the head an EfficientNetV2 or the D4-invariant escnn CNN (:mod:`.heads`)::

    KappaPINN (d4lenspinn, vanilla_lenspinn)
      image (B, 1, n, n) -> Preprocessing [I, log-contrast, |distortion|, |grad I|, laplacian I]   (B, 5, n, n)
      -> UNet: kappa >= 0 (B, 1, n, n) -> LensingEngine: psi, alpha, source S, re-lensed R        KappaMaps
      -> head channels [I, log(1 + kappa), S, I - R, 4 preprocessed]                               (B, 8, n, n)
    MacroPINN (d4lenspinn_lens, vanilla_lenspinn_lens; d4lenspinn with macro_lens=True)
      -> one UNet, 5 signed maps: 4 -> MacroReadout: SIE + shear per image, 1 -> delta_kappa       LensMaps
         (shared_trunk=False: a MacroEstimator U-Net of its own for the 4 maps; both heads zero at the start)
      -> LensingEngine with kappa_macro + delta_kappa: S, R; with residual channels also the macro lens alone
      -> head channels [I, delta_kappa, (I - R_macro, spread, I - R), 4 preprocessed], standardised (B, 6 or 9, n, n)

``I - R_macro`` is what the smooth lens cannot explain and ``spread`` how inconsistent the image pixels that share
a source pixel are under it: both ~0 for a smooth lens (docs/models.md). Everything before the head commutes with
the 8 pixel-grid symmetries to float precision (``maps.transform(g)``), which makes the one-pass test-time
augmentation of :mod:`d4lenspinn.tta` exact; with the invariant head the whole model is invariant.

Example::

    model = create_model("d4lenspinn", image_size=64, pixel_scale=0.101)     # pixel_scale: arcsec per pixel
    maps = model.forward_features(images)        # KappaMaps: kappa, psi, alpha, source, ..., features
    channels = model.head_channels(maps)         # (B, 8, n, n), named by model.head_channel_names
    logits = model.forward_head(channels)        # (B, 3); model(images) is ModelOutput(logits, maps)
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..physics import LensingEngine, PixelGrid, macro_convergence
from .capabilities import ModelCapabilities
from .heads import INVARIANT_HEAD, build_head
from .inputs import check_images
from .macro_estimator import MacroEstimator, MacroReadout
from .maps import KappaMaps, LensMaps
from .output import ModelOutput
from .preprocessing import Preprocessing
from .registry import register_model
from .unet import UNet, check_pool

__all__ = ["D4LensPINN", "KappaPINN", "MacroPINN"]

KAPPA_DISPLAY_CAP = 10.0  # the SIE's 1/r convergence is capped at its centre in the reported kappa map
DEFAULT_HEAD = "tf_efficientnetv2_b0"


class D4LensPINN(nn.Module):
    """The physics-informed family: ``forward_features`` (typed maps), ``head_channels`` (stacked scalar maps named
    by ``head_channel_names``), ``forward_head`` (logits). ``preprocessing=False`` feeds the bare image to the U-Net
    and the head (the no-preprocessing ablation). Subclasses build the trunk and call :meth:`_finish`."""

    head_channel_names: tuple[str, ...]

    def __init__(self, name: str, image_size: int, pixel_scale: float, in_chans: int, preprocessing: bool) -> None:
        super().__init__()
        if in_chans != 1:
            raise ValueError(f"{name} works on single-band images (in_chans=1), got in_chans={in_chans}")
        self.name, self.image_size, self.in_chans = name, image_size, in_chans
        self.grid = PixelGrid(image_size, pixel_scale)
        self.preprocessing = Preprocessing() if preprocessing else nn.Identity()
        self.feature_names = Preprocessing.channel_names if preprocessing else ("image",)

    def _finish(
        self, head: str, num_classes: int, drop_rate: float, equivariant: bool, macro_lens: bool, pool: int = 1
    ) -> None:
        """Build the head on ``head_channel_names`` (the invariant one on ``pool x pool`` block averages) and declare
        the capabilities."""
        self.num_classes = num_classes
        self.head = build_head(head, len(self.head_channel_names), num_classes, self.image_size, drop_rate, pool)
        cam_layer = "head.conv_head" if isinstance(getattr(self.head, "conv_head", None), nn.Conv2d) else None
        if cam_layer is None and hasattr(self, "head_norm"):
            cam_layer = "head_norm"  # the escnn head has no plain conv: the standardised head input
        self.capabilities = ModelCapabilities(
            physics_maps=True,
            kappa_map=True,
            macro_lens=macro_lens,
            equivariant_maps=equivariant,
            invariant=equivariant and head == INVARIANT_HEAD,
            cam_layer=cam_layer,
        )

    def forward_features(self, images: torch.Tensor) -> KappaMaps:
        """The D4-equivariant part: images ``(B, 1, n, n)`` -> this model's typed maps."""
        raise NotImplementedError

    def head_channels(self, maps: KappaMaps) -> torch.Tensor:
        """The scalar maps the head sees, stacked ``(B, len(head_channel_names), n, n)``."""
        raise NotImplementedError

    def forward_head(self, channels: torch.Tensor) -> torch.Tensor:
        """Stacked head channels ``(B, C, n, n)`` -> logits ``(B, num_classes)``."""
        return self.head(channels)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        maps = self.forward_features(images)
        return ModelOutput(self.forward_head(self.head_channels(maps)), maps)

    def export(self) -> D4LensPINN:
        """A copy in eval mode whose escnn parts are plain torch (their ``export()``); same outputs to float
        precision. This model's train/eval mode is kept."""
        was_training = self.training
        self.eval()
        # escnn parts (they cache non-leaf filters in eval mode, which deepcopy refuses) are replaced by their exports
        exports = {id(m): m.export() for m in self.children() if callable(getattr(m, "export", None))}
        exported = copy.deepcopy(self, memo=exports)
        self.train(was_training)
        return exported


class KappaPINN(D4LensPINN):
    """A U-Net predicts the convergence ``kappa >= 0``; the engine lenses with it alone."""

    def __init__(
        self,
        name: str,
        image_size: int,
        pixel_scale: float,
        in_chans: int = 1,
        num_classes: int = 3,
        widths: tuple[int, ...] = (2, 4, 8, 16),
        equivariant: bool = True,
        head: str = DEFAULT_HEAD,
        head_drop_rate: float = 0.2,
        preprocessing: bool = True,
    ) -> None:
        super().__init__(name, image_size, pixel_scale, in_chans, preprocessing)
        channels = len(self.feature_names)
        self.unet = UNet(channels, image_size, tuple(widths), equivariant=equivariant, non_negative=True)
        self.engine = LensingEngine(self.grid)
        self.head_channel_names = ("image", "log(1 + kappa)", "source", "I - R", *self.feature_names[1:])
        self._finish(head, num_classes, head_drop_rate, equivariant, macro_lens=False)

    def forward_features(self, images: torch.Tensor) -> KappaMaps:
        check_images(images, self.in_chans, self.image_size, self.name)
        features = self.preprocessing(images)  # (B, 5, n, n), or the image (B, 1, n, n) without preprocessing
        kappa = self.unet(features)  # (B, 1, n, n) >= 0
        physics = self.engine(kappa, images)
        return KappaMaps(
            kappa, physics.psi, physics.alpha, physics.source, physics.source_weight, physics.relensed, features
        )

    def head_channels(self, maps: KappaMaps) -> torch.Tensor:
        """``[I, log(1 + kappa), S, I - R, features[1:]]`` ``(B, 3 + C, n, n)`` for ``C`` feature channels."""
        image, extra = maps.features[:, :1], maps.features[:, 1:]
        return torch.cat((image, torch.log1p(maps.kappa), maps.source, image - maps.relensed, extra), dim=1)


class MacroPINN(D4LensPINN):
    """The smooth lens (SIE + shear) is read out of four scalar maps
    (:class:`~d4lenspinn.models.macro_estimator.MacroReadout`) and the signed substructure convergence ``delta_kappa``
    is a fifth; the engine adds the two. With ``shared_trunk`` (the default) one U-Net computes all five maps, which
    halves the full-resolution equivariant work (docs/models.md, "Where the time goes"); without it a
    :class:`~d4lenspinn.models.macro_estimator.MacroEstimator` of ``macro_widths`` (default ``(2, 4, 8, 16)``)
    computes the four. The last layers are zero-initialised: training starts from the light's centroid, a round
    unsheared lens and ``delta_kappa = 0``.
    ``residual_channels`` adds ``I - R_macro``, ``spread`` and ``I - R`` to the head channels; ``head_pool`` lets the
    invariant head see ``head_pool x head_pool`` block averages of them (:class:`~.heads.InvariantHead`);
    ``trunk_pool`` runs the shared trunk on ``trunk_pool x trunk_pool`` block averages of the features, its five maps
    constant over each block (``UNet(input_pool=...)``), while the engine and the head keep the full grid."""

    def __init__(
        self,
        name: str,
        image_size: int,
        pixel_scale: float,
        in_chans: int = 1,
        num_classes: int = 3,
        widths: tuple[int, ...] = (2, 4, 8, 16),
        equivariant: bool = True,
        head: str = DEFAULT_HEAD,
        head_drop_rate: float = 0.2,
        preprocessing: bool = True,
        macro_widths: tuple[int, ...] | None = None,
        residual_channels: bool = True,
        shared_trunk: bool = True,
        head_pool: int = 1,
        trunk_pool: int = 1,
    ) -> None:
        super().__init__(name, image_size, pixel_scale, in_chans, preprocessing)
        if shared_trunk and macro_widths is not None:
            raise ValueError(
                f"{name}: macro_widths sizes a separate macro-lens U-Net, which the shared trunk does not have; set "
                f"shared_trunk=False to use it (got macro_widths={macro_widths})"
            )
        if not shared_trunk and trunk_pool != 1:
            raise ValueError(
                f"{name}: trunk_pool applies to the shared trunk; with shared_trunk=False leave it at 1 (got "
                f"trunk_pool={trunk_pool!r})"
            )
        check_pool(trunk_pool, image_size, "trunk_pool")
        channels = len(self.feature_names)
        self.shared_trunk = shared_trunk
        maps = 1 + MacroReadout.n_maps if shared_trunk else 1  # delta_kappa first, then the read-out's maps
        self.unet = UNet(
            channels,
            image_size,
            tuple(widths),
            equivariant=equivariant,
            out_channels=maps,
            non_negative=False,
            input_pool=trunk_pool,
        )
        for parameter in self.unet.blocks["head"].parameters():  # delta_kappa = 0 (and the round lens) at the start
            nn.init.zeros_(parameter)
        if shared_trunk:
            self.macro_readout = MacroReadout(self.grid)
        else:
            macro_widths = (2, 4, 8, 16) if macro_widths is None else tuple(macro_widths)
            self.macro_estimator = MacroEstimator(image_size, pixel_scale, channels, macro_widths, equivariant)
        self.engine = LensingEngine(self.grid)
        self.residual_channels = residual_channels
        residuals = ("I - R_macro", "spread", "I - R") if residual_channels else ()
        self.head_channel_names = ("image", "delta_kappa", *residuals, *self.feature_names[1:])
        # per-channel standardisation (batch statistics, running averages in eval): a per-channel affine map, so it
        # commutes with D4 and keeps the residuals' amplitude, the signal, comparable between images
        self.head_norm = nn.BatchNorm2d(len(self.head_channel_names), affine=False)
        self._finish(head, num_classes, head_drop_rate, equivariant, macro_lens=True, pool=head_pool)

    def forward_features(self, images: torch.Tensor) -> LensMaps:
        check_images(images, self.in_chans, self.image_size, self.name)
        features = self.preprocessing(images)  # (B, 5, n, n), or the image (B, 1, n, n) without preprocessing
        maps = self.unet(features)  # (B, 1 or 5, n, n) signed scalar maps
        delta_kappa = maps[:, :1]  # (B, 1, n, n)
        macro = self.macro_readout(maps[:, 1:], features) if self.shared_trunk else self.macro_estimator(features)
        physics = self.engine(delta_kappa, images, macro)
        kappa = macro_convergence(macro, self.grid, cap=KAPPA_DISPLAY_CAP) + delta_kappa
        smooth = self.engine.macro_residual(images, macro) if self.residual_channels else None
        return LensMaps(
            kappa,
            physics.psi,
            physics.alpha,
            physics.source,
            physics.source_weight,
            physics.relensed,
            features,
            macro,
            delta_kappa,
            None if smooth is None else smooth.relensed,
            None if smooth is None else smooth.spread,
        )

    def head_channels(self, maps: LensMaps) -> torch.Tensor:
        """``[I, delta_kappa, (I - R_macro, spread, I - R), features[1:]]``, standardised per channel."""
        image, extra = maps.features[:, :1], maps.features[:, 1:]
        channels = [image, maps.delta_kappa]
        if self.residual_channels:
            channels += [image - maps.macro_relensed, maps.macro_spread, image - maps.relensed]
        return self.head_norm(torch.cat((*channels, extra), dim=1))


@register_model("d4lenspinn")
def d4lenspinn(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, macro_lens: bool = False, **kwargs
) -> KappaPINN:  # the class whose options model.kwargs may set (check_model_kwargs); MacroPINN with macro_lens=True
    """D4LensPINN (this package): D4-equivariant escnn U-Net for kappa, parameter-free lensing physics, EfficientNetV2
    head (``macro_lens=True``: the macro lens + ``delta_kappa`` trunk with this head). Improves on the published
    D4LensPINN (DeepLense, 2025) with exact equivariance, a solver-consistent engine and a one-pass test-time
    augmentation; see ARCHITECTURE.md."""
    if macro_lens:
        return MacroPINN("d4lenspinn_lens", image_size, pixel_scale, in_chans, num_classes, equivariant=True, **kwargs)
    return KappaPINN("d4lenspinn", image_size, pixel_scale, in_chans, num_classes, equivariant=True, **kwargs)


@register_model("vanilla_lenspinn")
def vanilla_lenspinn(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, macro_lens: bool = False, **kwargs
) -> KappaPINN:  # MacroPINN with macro_lens=True
    """The control: the identical D4LensPINN pipeline with a plain (non-equivariant) U-Net of the same topology and
    a similar parameter count, so any difference is due to the equivariance constraint."""
    kind, name = (MacroPINN, "vanilla_lenspinn_lens") if macro_lens else (KappaPINN, "vanilla_lenspinn")
    return kind(name, image_size, pixel_scale, in_chans, num_classes, equivariant=False, **kwargs)


# the lens model's head: the D4-invariant CNN beat EfficientNetV2 clearly (docs/RESULTS.md: 0.972 vs 0.780). Residual
# channels: on won two of three runs (seed 1: +0.006 [+0.002, +0.011] paired) but the margin is within the spread
# between seeds, and off is the configuration every d4lenspinn_lens row of docs/RESULTS.md and `make demo` measure.
# MacroPINN's defaults give it one shared trunk and a full-resolution head (head_pool=2 cost 0.014 AUC at 64 px;
# docs/models.md, "Where the time goes")
LENS_MODEL = {"head": INVARIANT_HEAD, "residual_channels": False}


@register_model("d4lenspinn_lens")
def d4lenspinn_lens(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs
) -> MacroPINN:
    """D4LensPINN with the lens model (``LENS_MODEL``: macro SIE + shear estimate, signed ``delta_kappa``, invariant
    head, no residual channels); the whole model is D4-invariant. Train it with ``loss.macro > 0`` on simulations
    (or ``loss.consistency > 0`` without truth). ``kwargs`` override the settings (``residual_channels=True``,
    ``head="tf_efficientnetv2_b0"``, ...)."""
    return MacroPINN("d4lenspinn_lens", image_size, pixel_scale, in_chans, num_classes, **{**LENS_MODEL, **kwargs})


@register_model("vanilla_lenspinn_lens")
def vanilla_lenspinn_lens(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs
) -> MacroPINN:
    """The control of ``d4lenspinn_lens``: the same lens-model pipeline with plain (non-equivariant) U-Nets."""
    settings = {**LENS_MODEL, **kwargs, "equivariant": False}
    return MacroPINN("vanilla_lenspinn_lens", image_size, pixel_scale, in_chans, num_classes, **settings)

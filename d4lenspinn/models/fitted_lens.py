"""D4LensPINN with the lens fitted to each image: the network estimates the smooth lens, a few Levenberg-Marquardt
steps through the package's own lens and light models refine it, and the classifier sees what it cannot explain.

    FittedPINN (d4lenspinn_fit, vanilla_lenspinn_fit)
      image (B, 1, n, n) -> Preprocessing                                                       features (B, 5, n, n)
      -> MacroEstimator: SIE + shear estimate (trained by loss.macro)                            macro_estimate
      -> fit_smooth_lens from the best of 45 starts around it: SIE + shear + Sersic source, PSF, sky; noise sigma per
         image (lens_start="prior": from a grid over the prior instead, no estimator)           macro, (I - M) / sigma
      -> UNet on [features, asinh(residual / sigma)]: signed delta_kappa on top of the fitted lens (zero at the start)
      -> LensingEngine with the fitted lens + delta_kappa: S, R                                  FittedLensMaps
      -> head channels [I, asinh(residual / sigma), delta_kappa, 4 preprocessed], standardised   (B, 7, n, n)

A lens modeller's first step, batched (:mod:`d4lenspinn.physics.lens_fit`): the residual in units of each image's
noise no longer depends on the Einstein radius, the source or the signal-to-noise, as the image does. ``asinh``
keeps it linear within a few sigma and logarithmic beyond (a misfit source can leave hundreds of sigma). The fit runs
without a graph (its result is a measurement of the image, not a function to train through): the estimator learns
from ``loss.macro``, the U-Net and the head from the classification. Everything before the head commutes with the 8
pixel-grid symmetries (the fit's steps are D4-equivariant, tests/physics/test_lens_fit.py); with the invariant head
the model is invariant.
"""

from __future__ import annotations

import torch
from torch import nn

from ..physics import LensFit, LensingEngine, MacroLens, StartGrid, centred_lens, fit_smooth_lens, macro_convergence
from ..physics.grid import check_supersampling
from ..physics.lens_fit import check_shot_noise
from .heads import INVARIANT_HEAD
from .inputs import check_images
from .macro_estimator import MacroEstimator
from .maps import FittedLensMaps
from .physics_informed import KAPPA_DISPLAY_CAP, D4LensPINN
from .registry import register_model
from .unet import UNet

__all__ = ["FittedPINN", "DEFAULT_PSF_PIXELS", "DEFAULT_STARTS", "LENS_STARTS"]

DEFAULT_PSF_PIXELS = 1.6  # PSF FWHM in pixels when none is given: DeepLenseSim's Model I-III are 1.6-1.7 pixels
# the fit starts from the best of 45 candidates around the estimate (theta_E x 5 scales, centre on a 3 x 3 grid of
# +-3 px): from a trained estimator 16% / 2.8 px off, the fitted lens goes from 1.9% / 0.88 px to 1.1% / 0.44 px
# (medians, docs/RESULTS.md) for about 40% more fit time
DEFAULT_STARTS = StartGrid((0.7, 0.85, 1.0, 1.2, 1.4), (-3.0, 0.0, 3.0))
# where the fit starts: around the estimator's lens, or (no estimator, no lens truth needed) from StartGrid.over_prior
# about a centred round lens: on model_ii_broad the same median lens and half the centre's 90th percentile
# (docs/RESULTS.md, "Does the fit need the network's estimate at all?")
LENS_STARTS = ("estimate", "prior")


class FittedPINN(D4LensPINN):
    """Estimate, fit (``fit_steps`` Levenberg-Marquardt steps with a Gaussian PSF of ``psf_fwhm`` arcsec, default
    :data:`DEFAULT_PSF_PIXELS` pixels, truncated at ``psf_truncation`` sigma, its width fitted per image from there
    with ``fit_psf``, from the best start of the estimate's theta_E times ``fit_theta_e_scales`` and centre shifted
    by ``fit_centre_shifts`` pixels per axis, :data:`DEFAULT_STARTS`), then ``delta_kappa`` and the head on the
    noise-normalised residual; see the module doc. With ``lens_start="prior"`` there is no estimator: the fit starts
    from :meth:`~d4lenspinn.physics.StartGrid.over_prior` of ``prior_theta_e`` [arcsec] and ``fit_centre_shifts``
    (default then +-2 px; ``fit_theta_e_scales`` and ``macro_widths`` are unused), so training needs no lens truth
    (set ``loss.macro`` to 0). ``supersampling`` (sub-pixels per pixel and axis) integrates the fit's model over
    each pixel: 1 for the package's simulator (it samples pixel centres), 3 for lenstronomy's images and the sky;
    ``shot_noise`` weighs each pixel by its own noise, the source's shot noise included: the instrument's background
    noise in electrons per pixel, or ``"fit"`` (:func:`~d4lenspinn.physics.fit_smooth_lens`)."""

    def __init__(
        self,
        name: str,
        image_size: int,
        pixel_scale: float,
        in_chans: int = 1,
        num_classes: int = 3,
        widths: tuple[int, ...] = (2, 4, 8, 16),
        equivariant: bool = True,
        head: str = INVARIANT_HEAD,
        head_drop_rate: float = 0.2,
        preprocessing: bool = True,
        macro_widths: tuple[int, ...] = (2, 4, 8, 16),
        psf_fwhm: float | None = None,
        psf_truncation: float = 4.0,
        fit_steps: int = 5,
        fit_theta_e_scales: tuple[float, ...] = DEFAULT_STARTS.theta_e_scales,
        fit_centre_shifts: tuple[float, ...] | None = None,
        fit_psf: bool = False,
        lens_start: str = "estimate",
        prior_theta_e: tuple[float, float] = (0.6, 1.6),
        supersampling: int = 1,
        shot_noise: str | float | None = None,
    ) -> None:
        super().__init__(name, image_size, pixel_scale, in_chans, preprocessing)
        psf_fwhm = DEFAULT_PSF_PIXELS * pixel_scale if psf_fwhm is None else psf_fwhm
        if not (psf_fwhm > 0 and psf_truncation > 0):
            raise ValueError(
                f"{name}: psf_fwhm [arcsec] and psf_truncation must be > 0, got {psf_fwhm}, {psf_truncation}"
            )
        if isinstance(fit_steps, bool) or not isinstance(fit_steps, int) or fit_steps < 0:
            raise ValueError(f"{name}: fit_steps must be an integer >= 0, got {fit_steps!r}")
        if not isinstance(fit_psf, bool):
            raise ValueError(f"{name}: fit_psf must be true or false, got {fit_psf!r}")
        self.psf_fwhm, self.psf_truncation, self.fit_steps = float(psf_fwhm), float(psf_truncation), fit_steps
        self.fit_psf = fit_psf
        try:
            check_supersampling(supersampling)
            check_shot_noise(shot_noise)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        self.supersampling, self.shot_noise = supersampling, shot_noise
        if lens_start not in LENS_STARTS:
            raise ValueError(f"{name}: lens_start must be one of {LENS_STARTS}, got {lens_start!r}")
        self.lens_start = lens_start
        if fit_centre_shifts is None:
            fit_centre_shifts = DEFAULT_STARTS.centre_shifts if lens_start == "estimate" else (-2.0, 0.0, 2.0)
        scales, shifts = tuple(map(float, fit_theta_e_scales)), tuple(map(float, fit_centre_shifts))
        if not scales or min(scales) <= 0 or not shifts or sorted(shifts) != sorted(-x for x in shifts):
            raise ValueError(
                f"{name}: fit_theta_e_scales must be factors > 0 and fit_centre_shifts [pixels] symmetric about 0 (so "
                f"D4 maps the starts to themselves), got {fit_theta_e_scales}, {fit_centre_shifts}"
            )
        channels = len(self.feature_names)
        if lens_start == "prior":
            self.fit_starts = StartGrid.over_prior(tuple(map(float, prior_theta_e)), shifts)
            self.macro_estimator = None
        else:
            self.fit_starts = StartGrid(scales, shifts)
            self.macro_estimator = MacroEstimator(image_size, pixel_scale, channels, tuple(macro_widths), equivariant)
        self.unet = UNet(channels + 1, image_size, tuple(widths), equivariant=equivariant, non_negative=False)
        for parameter in self.unet.blocks["head"].parameters():  # delta_kappa = 0 at the start
            nn.init.zeros_(parameter)
        self.engine = LensingEngine(self.grid)
        self.head_channel_names = ("image", "asinh(residual / sigma)", "delta_kappa", *self.feature_names[1:])
        self.head_norm = nn.BatchNorm2d(len(self.head_channel_names), affine=False)  # per channel: commutes with D4
        self._finish(head, num_classes, head_drop_rate, equivariant, macro_lens=True)

    def fit_lens(self, images: torch.Tensor, features: torch.Tensor) -> tuple[LensFit, MacroLens | None]:
        """The smooth lens fitted to ``images (B, 1, n, n)`` from the estimate on ``features`` (the preprocessed
        images) or the prior's starts, without a graph; and the estimate (None with ``lens_start="prior"``)."""
        if self.macro_estimator is None:
            estimate, init = None, centred_lens(len(images), device=images.device)
        else:
            estimate = self.macro_estimator(features)
            init = MacroLens(*(value.detach().float() for value in estimate))
        with torch.autocast(images.device.type, enabled=False):  # the fit needs float32 at least (CUDA AMP: bf16)
            fit = fit_smooth_lens(
                images.float(),
                init,
                self.grid,
                self.psf_fwhm,
                self.psf_truncation,
                self.fit_steps,
                gradients=False,
                starts=self.fit_starts,
                fit_psf=self.fit_psf,
                supersampling=self.supersampling,
                shot_noise=self.shot_noise,
            )
        return fit, estimate

    def forward_features(self, images: torch.Tensor) -> FittedLensMaps:
        check_images(images, self.in_chans, self.image_size, self.name)
        features = self.preprocessing(images)  # (B, 5, n, n), or the image (B, 1, n, n) without preprocessing
        fit, estimate = self.fit_lens(images, features)
        residual = torch.asinh(fit.normalised_residual)
        delta_kappa = self.unet(torch.cat((features, residual), dim=1))  # (B, 1, n, n), signed
        physics = self.engine(delta_kappa, images, fit.macro)
        kappa = macro_convergence(fit.macro, self.grid, cap=KAPPA_DISPLAY_CAP) + delta_kappa
        return FittedLensMaps(
            kappa,
            physics.psi,
            physics.alpha,
            physics.source,
            physics.source_weight,
            physics.relensed,
            features,
            fit.macro,
            delta_kappa,
            macro_relensed=fit.model,
            macro_estimate=estimate,
            normalised_residual=fit.normalised_residual,
            noise_sigma=fit.sigma,
            reduced_chi2=fit.reduced_chi2,
            fit_failed=fit.failed,
            psf_fwhm=fit.psf_fwhm,
        )

    def head_channels(self, maps: FittedLensMaps) -> torch.Tensor:
        """``[I, asinh(residual / sigma), delta_kappa, features[1:]]``, standardised per channel."""
        image, extra = maps.features[:, :1], maps.features[:, 1:]
        residual = torch.asinh(maps.normalised_residual)
        return self.head_norm(torch.cat((image, residual, maps.delta_kappa, extra), dim=1))


@register_model("d4lenspinn_fit")
def d4lenspinn_fit(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs
) -> FittedPINN:
    """D4LensPINN fitting the smooth lens to each image (:class:`FittedPINN`: estimate, 5 Levenberg-Marquardt steps,
    the head on the noise-normalised residual, invariant head); D4-invariant. Train it with ``loss.macro > 0``, or
    with ``lens_start="prior"`` (no estimator, no lens truth) and ``loss.macro`` 0; set ``psf_fwhm`` [arcsec] to the
    instrument's PSF."""
    return FittedPINN("d4lenspinn_fit", image_size, pixel_scale, in_chans, num_classes, **kwargs)


@register_model("vanilla_lenspinn_fit")
def vanilla_lenspinn_fit(
    image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs
) -> FittedPINN:
    """The control of ``d4lenspinn_fit``: the same pipeline with plain (non-equivariant) U-Nets."""
    settings = {**kwargs, "equivariant": False}
    return FittedPINN("vanilla_lenspinn_fit", image_size, pixel_scale, in_chans, num_classes, **settings)

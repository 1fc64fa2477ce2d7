"""LensPINN (Ojha, Toomey, Gleyzer & Kumbam, NeurIPS 2024 ML4PS workshop): SIS lens inversion inside a classifier.

Data flow for ``B`` images of ``n x n`` pixels (``pixel_scale`` arcsec each)::

    image I (B, C, n, n)
      -> ViT encoder -> softplus                     theta_E (B,) [arcsec], the Einstein radius of an SIS lens
      -> alpha = theta_E theta / |theta|             (B, 2, n, n) [arcsec]   (profiles.sis_deflection on the grid)
      -> inverse_lens(I, alpha)                      source S (B, C, n, n), coverage weight (B, 1, n, n)
      -> distortion_map(I)                           preprocessed P (B, C, n, n)
    CNN_a (shared weights): [f_I, f_S] = CNN_a([I, S]), one batch of 2B      (B, F) each
    CNN_b:                  f_P = CNN_b(P)                                 (B, F)
    MLP([f_I - f_S, f_P])                            logits (B, num_classes)

The source plane is the image grid itself: for an SIS, ``|beta| = ||theta| - theta_E|``, so every image pixel lands
inside the field while ``theta_E`` is below half the field of view (3.75" for the 7.5" DeepLense images). The paper
enlarges the source grid from the data instead; a fixed grid keeps the inversion differentiable in ``theta_E`` and
the source maps comparable across a batch. Multiply imaged source pixels get the mean of their image pixels, as in
the paper. The encoder is a small timm ViT (dim 128, depth 4, 4 heads) whose output bias starts at
``theta_e_init``; the paper does not give its size. Feature extractors: timm ``mobilenetv3_small_100`` (small) and
``efficientnet_b0`` (large), randomly initialised, their pooled pre-logits features (``F`` = 1024 and 1280).
Parameters at 64x64, one channel, three classes: small 4,370,692 (encoder 810,241), large 9,480,572 -- the
paper's 7.17M / 14.56M are about 1.6x these, with the same half-size ratio.

``pixel_scale`` (arcsec per pixel) is that of the data: the trainer takes it from the data, a checkpoint from its
model card (DeepLense Model I: 0.05"/px; Model II: 0.101"/px).

Example::

    model = create_model("lenspinn_small", image_size=64, pixel_scale=0.101)
    out = model(images)
    out.logits, out.maps.alpha, out.maps.source, out.maps.source_weight    # (B,3) (B,2,n,n) (B,C,n,n) (B,1,n,n)
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..physics import PixelGrid, SourceReconstruction, inverse_lens
from ..physics.profiles import sis_deflection
from .baselines import vit_patch_size
from .capabilities import ModelCapabilities
from .inputs import check_images
from .maps import SourceMaps
from .output import ModelOutput
from .preprocessing import distortion_map
from .registry import register_model

__all__ = ["LensPINN", "lenspinn_small", "lenspinn_large"]


class LensPINN(nn.Module):
    """LensPINN classifier; see the module docstring for the data flow and the returned maps.

    ``backbone``: timm architecture of both feature extractors; ``theta_e_init``: Einstein radius [arcsec] the
    encoder predicts at initialisation (1.28", the DeepLense main lens); ``hidden``: width of the MLP head.
    """

    capabilities = ModelCapabilities(physics_maps=True)

    def __init__(
        self,
        image_size: int,
        backbone: str,
        pixel_scale: float,
        in_chans: int = 1,
        num_classes: int = 3,
        theta_e_init: float = 1.28,
        encoder_dim: int = 128,
        encoder_depth: int = 4,
        hidden: int = 256,
        name: str = "lenspinn",
    ) -> None:
        super().__init__()
        if not theta_e_init > 0:
            raise ValueError(f"{name}: theta_e_init must be a positive Einstein radius in arcsec, got {theta_e_init}")
        self.name, self.image_size, self.in_chans = name, image_size, in_chans
        self.grid = PixelGrid(image_size, pixel_scale)
        self.register_buffer("coordinates", torch.stack(self.grid.coordinates()), persistent=False)  # (2, n, n)

        self.encoder = VisionTransformer(
            img_size=image_size,
            patch_size=vit_patch_size(image_size),
            in_chans=in_chans,
            num_classes=1,
            embed_dim=encoder_dim,
            depth=encoder_depth,
            num_heads=4,
        )
        with torch.no_grad():  # softplus(bias) = theta_e_init
            self.encoder.head.bias.fill_(theta_e_init + math.log(-math.expm1(-theta_e_init)))
        self.lens_features = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0)
        self.distortion_features = timm.create_model(backbone, pretrained=False, in_chans=in_chans, num_classes=0)
        width = self.lens_features.head_hidden_size
        self.head = nn.Sequential(nn.Linear(2 * width, hidden), nn.GELU(), nn.Linear(hidden, num_classes))

    def einstein_radius(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder estimate of the SIS Einstein radius, ``(B,)`` arcsec, positive."""
        return F.softplus(self.encoder(images)).squeeze(-1)

    def sis_inversion(self, images: torch.Tensor, theta_e: torch.Tensor) -> tuple[torch.Tensor, SourceReconstruction]:
        """SIS deflection ``(B, 2, n, n)`` for ``theta_e (B,)`` [arcsec] and the source reconstructed through it."""
        x, y = self.coordinates.to(images.dtype)
        alpha = sis_deflection(x, y, theta_e.to(images.dtype).reshape(-1, 1, 1))  # (B, 2, n, n)
        return alpha, inverse_lens(images, alpha, self.grid)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        check_images(images, self.in_chans, self.image_size, self.name)
        alpha, (source, weight) = self.sis_inversion(images, self.einstein_radius(images))  # S (B, C, n, n)
        preprocessed = distortion_map(images)  # (B, C, n, n)
        # one pass over image and source together: BatchNorm then normalises, in training, the same mixture of the
        # two whose running statistics it uses in evaluation (two passes trained on per-input batch statistics and
        # evaluated on their average, so the model scored chance in eval mode while fitting in train mode)
        features = self.lens_features(torch.cat((images, source)))  # (2B, F)
        lensing = features[: len(images)] - features[len(images) :]  # (B, F)
        combined = torch.cat((lensing, self.distortion_features(preprocessed)), dim=1)  # (B, 2F)
        return ModelOutput(self.head(combined), SourceMaps(alpha, source, weight, preprocessed))


@register_model("lenspinn_small")
def lenspinn_small(image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs) -> LensPINN:
    """LensPINN_small (Ojha et al., "LensPINN: physics informed neural network for learning dark matter morphology
    in lensing", NeurIPS 2024 ML4PS): ViT-encoded SIS Einstein radius, differentiable lens inversion to the source,
    and MobileNetV3 (timm ``mobilenetv3_small_100``) features of the image minus those of the source, concatenated
    with features of the LensPINN distortion map, into an MLP. ``kwargs`` go to :class:`LensPINN`.
    """
    return LensPINN(
        image_size, "mobilenetv3_small_100", pixel_scale, in_chans, num_classes, name="lenspinn_small", **kwargs
    )


@register_model("lenspinn_large")
def lenspinn_large(image_size: int, pixel_scale: float, in_chans: int = 1, num_classes: int = 3, **kwargs) -> LensPINN:
    """LensPINN_large (Ojha et al., NeurIPS 2024 ML4PS): as :func:`lenspinn_small` with EfficientNet-B0 (timm
    ``efficientnet_b0``; Tan & Le, ICML 2019) feature extractors, the paper's best model on its 64x64 benchmark.
    ``kwargs`` go to :class:`LensPINN`.
    """
    return LensPINN(image_size, "efficientnet_b0", pixel_scale, in_chans, num_classes, name="lenspinn_large", **kwargs)

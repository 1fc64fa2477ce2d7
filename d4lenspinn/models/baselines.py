"""Comparison baselines built from timm: plain CNNs, the LensPINN table's transformers, and a residual-channel CNN.

All are randomly initialised (``pretrained=False``; nothing is ever downloaded) and wrapped in :class:`TimmClassifier`
so that they check their input and return a :class:`~d4lenspinn.models.ModelOutput`.

Parameters at 64x64, one input channel, three classes:

* ``resnet18``: timm ``resnet18`` (He et al. 2016), 11,171,779.
* ``efficientnetv2_b0``: timm ``tf_efficientnetv2_b0`` (Tan & Le 2021), 5,861,971.
* ``vit_small``: timm ``VisionTransformer``, dim 256, depth 8, 8 heads (Dosovitskiy et al. 2021), 6,352,899.
* ``cait_small``: timm ``Cait``, dim 256, depth 8 + 2 class-attention blocks, 8 heads (Touvron et al. 2021),
  7,938,435.
* ``residual_cnn``: timm ``resnet18`` on the 2 channels ``[I, I - G_sigma * I]``, 11,174,915.

Transformers use non-overlapping square patches, so the patch size must divide the image side; the default,
:func:`vit_patch_size`, picks the divisor giving a token grid closest to 8 x 8 (64 px -> 8, 150 px -> 15,
40 px -> 5). They have about half the parameters of the LensPINN table's ~14M-parameter transformers so that they
train on a CPU at 64x64.

Example::

    model = create_model("vit_small", image_size=150)     # 15 px patches, 10 x 10 tokens
    logits = model(images).logits                         # (B, 3)
"""

from __future__ import annotations

import timm
import torch
from timm.models.cait import Cait
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..physics.light import FWHM_PER_SIGMA, convolve_psf, gaussian_psf_kernel
from .inputs import check_images
from .maps import FeatureMaps
from .output import ModelOutput
from .registry import register_model

__all__ = [
    "TimmClassifier",
    "GaussianResidual",
    "vit_patch_size",
    "resnet18",
    "efficientnetv2_b0",
    "vit_small",
    "cait_small",
    "residual_cnn",
]


def vit_patch_size(image_size: int, tokens_per_side: int = 8) -> int:
    """The divisor ``p`` of ``image_size`` whose token grid ``image_size / p`` is closest to ``tokens_per_side``.

    Ties go to the finer grid (150 px: 15 px patches, 10 x 10 tokens, rather than 25 px, 6 x 6). A prime side has
    only the divisors 1 and itself; pass an explicit ``patch_size`` to the model then.
    """
    divisors = [p for p in range(1, image_size + 1) if image_size % p == 0]
    return min(divisors, key=lambda p: (abs(image_size // p - tokens_per_side), p))


def _check_patch_size(image_size: int, patch_size: int | None, model: str) -> int:
    patch_size = vit_patch_size(image_size) if patch_size is None else patch_size
    if patch_size < 1 or image_size % patch_size:
        raise ValueError(f"{model}: patch_size={patch_size} must divide image_size={image_size}")
    return patch_size


class TimmClassifier(nn.Module):
    """A timm network behind the package's model interface.

    ``forward(images (B, in_chans, n, n))`` checks the input, applies the optional parameter-free ``stem``
    (``(B, in_chans, n, n) -> (B, C, n, n)``, returned as ``features``) and the network, and returns
    ``ModelOutput(logits (B, num_classes), FeatureMaps(stem output))`` (maps ``None`` without a stem).
    """

    def __init__(self, net: nn.Module, name: str, image_size: int, in_chans: int, stem: nn.Module | None = None):
        super().__init__()
        self.net, self.stem = net, stem
        self.name, self.image_size, self.in_chans = name, image_size, in_chans

    def forward(self, images: torch.Tensor) -> ModelOutput:
        check_images(images, self.in_chans, self.image_size, self.name)
        if self.stem is None:
            return ModelOutput(logits=self.net(images))
        features = self.stem(images)  # (B, C, n, n)
        return ModelOutput(logits=self.net(features), maps=FeatureMaps(features))


class GaussianResidual(nn.Module):
    """``(B, C, n, n) -> (B, 2C, n, n)``: the image and its high-pass residual ``I - G_sigma * I``.

    ``G_sigma`` is a normalised Gaussian of ``sigma`` pixels (separable, truncated at 4 sigma, zero padding), so the
    residual keeps structure finer than ~sigma (arc perturbations, subhalo dimples) and removes the smooth lens
    light; the symmetric kernel commutes with the D4 grid symmetries. No parameters.
    """

    def __init__(self, sigma: float = 2.0) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"GaussianResidual: sigma must be > 0 pixels, got {sigma}")
        self.register_buffer("kernel", gaussian_psf_kernel(sigma * FWHM_PER_SIGMA, 1.0), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat((images, images - convolve_psf(images, self.kernel)), dim=1)


def _timm(name: str, image_size: int, in_chans: int, num_classes: int, arch: str) -> TimmClassifier:
    net = timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    return TimmClassifier(net, name, image_size, in_chans)


@register_model("resnet18")
def resnet18(image_size: int, in_chans: int = 1, num_classes: int = 3) -> TimmClassifier:
    """ResNet-18 (He et al., "Deep residual learning for image recognition", CVPR 2016), timm ``resnet18``.

    The plain-CNN baseline of the LensPINN table (11.17M parameters there) and of the published D4LensPINN
    comparison. Randomly initialised.
    """
    return _timm("resnet18", image_size, in_chans, num_classes, "resnet18")


@register_model("efficientnetv2_b0")
def efficientnetv2_b0(image_size: int, in_chans: int = 1, num_classes: int = 3) -> TimmClassifier:
    """EfficientNetV2-B0 (Tan & Le, "EfficientNetV2: smaller models and faster training", ICML 2021).

    timm ``tf_efficientnetv2_b0`` on the raw image: the same network as D4LensPINN's classifier head without any
    physics channels, i.e. the "what does the physics add" control. Randomly initialised.
    """
    return _timm("efficientnetv2_b0", image_size, in_chans, num_classes, "tf_efficientnetv2_b0")


@register_model("vit_small")
def vit_small(
    image_size: int,
    in_chans: int = 1,
    num_classes: int = 3,
    patch_size: int | None = None,
    embed_dim: int = 256,
    depth: int = 8,
    num_heads: int = 8,
) -> TimmClassifier:
    """Vision Transformer (Dosovitskiy et al., "An image is worth 16x16 words", ICLR 2021), timm implementation.

    The ViT row of the LensPINN table (Ojha et al. 2024, 13.7M parameters there), scaled to dim 256, depth 8,
    8 heads (6.35M at 64x64) so it trains on a CPU; class-token readout, learned position embeddings.
    ``patch_size`` defaults to :func:`vit_patch_size` and must divide ``image_size``.
    """
    patch_size = _check_patch_size(image_size, patch_size, "vit_small")
    net = VisionTransformer(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )
    return TimmClassifier(net, "vit_small", image_size, in_chans)


@register_model("cait_small")
def cait_small(
    image_size: int,
    in_chans: int = 1,
    num_classes: int = 3,
    patch_size: int | None = None,
    embed_dim: int = 256,
    depth: int = 8,
    num_heads: int = 8,
) -> TimmClassifier:
    """CaiT (Touvron et al., "Going deeper with image transformers", ICCV 2021), timm implementation.

    The CaiT row of the LensPINN table (Ojha et al. 2024, 13.8M parameters there), scaled to dim 256, ``depth``
    LayerScale self-attention blocks plus 2 class-attention blocks, 8 talking heads (7.94M at 64x64).
    ``patch_size`` defaults to :func:`vit_patch_size` and must divide ``image_size``.
    """
    patch_size = _check_patch_size(image_size, patch_size, "cait_small")
    net = Cait(
        img_size=image_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
    )
    return TimmClassifier(net, "cait_small", image_size, in_chans)


@register_model("residual_cnn")
def residual_cnn(
    image_size: int, in_chans: int = 1, num_classes: int = 3, sigma: float = 2.0, backbone: str = "resnet18"
) -> TimmClassifier:
    """A CNN on the image and its Gaussian high-pass residual ``[I, I - G_sigma * I]`` (:class:`GaussianResidual`).

    The residual-channel physics-informed baseline: substructure shows up as small-scale deviations from the
    smooth lensed arc, which the residual isolates without any learned physics. ``backbone`` is a timm
    architecture (default ``resnet18`` with ``2 * in_chans`` input channels, 11.17M parameters), randomly
    initialised; ``sigma`` in pixels. The stacked channels are returned as ``features``.
    """
    net = timm.create_model(backbone, pretrained=False, in_chans=2 * in_chans, num_classes=num_classes)
    return TimmClassifier(net, "residual_cnn", image_size, in_chans, stem=GaussianResidual(sigma))

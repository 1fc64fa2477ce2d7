"""``d4_cnn``: a D4-invariant CNN classifier built from escnn steerable convolutions.

Every layer is equivariant under the 8 pixel-grid symmetries (quarter turns and mirrors), and the head sees only
group- and space-pooled features, so the logits are invariant: ``model(g.x) == model(x)`` for every ``g`` in D4 up
to float rounding (about 1e-6 relative in float32), on odd and even image sizes alike. With the default widths
(4, 8, 16, 32) it has 97,899 parameters for one input channel and three classes, at any image size.
Float32 only: escnn's ``GroupPooling`` returns float32 whatever the input dtype.

Architecture for ``widths = (w0, w1, ...)`` (numbers of regular fields, 8 channels each)::

    image (B, in_chans, n, n)                          in_chans trivial (scalar) fields
      -> [R2Conv 3x3 -> InnerBatchNorm -> ReLU] x 2    w0 regular fields, n x n
      -> per further stage: downsample, [R2Conv 3x3 -> InnerBatchNorm -> ReLU] x 2  (w_i regular fields)
      -> GroupPooling (max over the 8 channels of each field)  (B, w_last, m, m), invariant scalars
      -> mean over pixels -> Linear                    logits (B, num_classes)

Downsampling must map the pixel grid onto itself under D4: on an even side, ``PointwiseMaxPool`` 2x2 stride 2 (its
windows tile the grid symmetrically); on an odd side, the stage's first R2Conv has stride 2 and padding 1, which
samples pixels 0, 2, ..., n - 1, a set closed under mirrors. (A stride-2 conv on an even side or a 2x2 pool on an odd
side samples an off-centre sub-grid, and interpolation to another size breaks the symmetry, too.)

Source: Weiler & Cesa, "General E(2)-equivariant steerable CNNs", NeurIPS 2019 (escnn); the group-convolution
classifier of Cohen & Welling, ICML 2016, on the D4 grid symmetries.

Example::

    model = create_model("d4_cnn", image_size=64)
    logits = model(images).logits                # (B, 3), identical for all 8 rotations/mirrors of images
    plain = model.export()                       # plain-torch copy with the same logits, no escnn type checks
"""

from __future__ import annotations

import copy

import torch
from escnn import gspaces
from escnn import nn as enn
from torch import nn

from .capabilities import ModelCapabilities
from .inputs import check_images
from .output import ModelOutput
from .preprocessing import Preprocessing
from .registry import register_model

__all__ = ["D4CNN", "ExportedD4CNN", "PreprocessedD4CNN", "d4_cnn", "d4_cnn_preprocessed"]


def _conv_block(in_type: enn.FieldType, out_type: enn.FieldType, stride: int = 1) -> list[enn.EquivariantModule]:
    return [
        enn.R2Conv(in_type, out_type, kernel_size=3, padding=1, stride=stride, bias=False),
        enn.InnerBatchNorm(out_type),
        enn.ReLU(out_type, inplace=True),
    ]


class D4CNN(nn.Module):
    """D4-invariant classifier ``(B, in_chans, n, n) -> ModelOutput(logits (B, num_classes))``; see the module doc."""

    capabilities = ModelCapabilities(invariant=True)

    def __init__(
        self, image_size: int, in_chans: int = 1, num_classes: int = 3, widths: tuple[int, ...] = (4, 8, 16, 32)
    ) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise ValueError(f"d4_cnn needs at least one stage of >= 1 regular field, got widths={widths}")
        self.image_size, self.in_chans = image_size, in_chans
        gspace = gspaces.flipRot2dOnR2(N=4)
        self.in_type = enn.FieldType(gspace, in_chans * [gspace.trivial_repr])

        layers: list[enn.EquivariantModule] = []
        current, size = self.in_type, image_size
        for stage, width in enumerate(widths):
            out_type = enn.FieldType(gspace, width * [gspace.regular_repr])
            stride = 1
            if stage > 0 and size % 2 == 0:
                layers.append(enn.PointwiseMaxPool2D(current, kernel_size=2, stride=2))
                size //= 2
            elif stage > 0:
                stride, size = 2, (size + 1) // 2
            layers += _conv_block(current, out_type, stride) + _conv_block(out_type, out_type)
            current = out_type
        layers.append(enn.GroupPooling(current))
        self.features = enn.SequentialModule(*layers)
        self.head = nn.Linear(widths[-1], num_classes)
        self.feature_size = size

    def forward(self, images: torch.Tensor) -> ModelOutput:
        check_images(images, self.in_chans, self.image_size, "d4_cnn")
        x = self.features(enn.GeometricTensor(images, self.in_type)).tensor  # (B, w_last, m, m) invariant fields
        return ModelOutput(logits=self.head(x.mean(dim=(-2, -1))))  # (B, num_classes)

    def export(self) -> ExportedD4CNN:
        """A plain-torch copy (escnn ``export()`` of the equivariant part) in eval mode with the same logits.

        Exporting uses the current weights and BatchNorm running statistics; this model's train/eval mode is kept.
        """
        training = self.training
        exported = ExportedD4CNN(self.features.export(), copy.deepcopy(self.head), self.in_chans, self.image_size)
        self.train(training)
        return exported.eval()


class ExportedD4CNN(nn.Module):
    """The output of :meth:`D4CNN.export`: ``torch.nn`` convolutions, BatchNorm, pooling and the linear head."""

    capabilities = ModelCapabilities(invariant=True)

    def __init__(self, features: nn.Module, head: nn.Linear, in_chans: int, image_size: int) -> None:
        super().__init__()
        self.features, self.head = features, head
        self.in_chans, self.image_size = in_chans, image_size

    def forward(self, images: torch.Tensor) -> ModelOutput:
        check_images(images, self.in_chans, self.image_size, "d4_cnn (exported)")
        return ModelOutput(logits=self.head(self.features(images).mean(dim=(-2, -1))))


@register_model("d4_cnn")
def d4_cnn(image_size: int, in_chans: int = 1, num_classes: int = 3, widths: tuple[int, ...] = (4, 8, 16, 32)) -> D4CNN:
    """D4-invariant steerable CNN (escnn, ``flipRot2dOnR2(N=4)``): the equivariant-CNN comparison model.

    Two 3x3 R2Conv + InnerBatchNorm + ReLU layers per stage on ``widths`` regular fields (8 channels each), a
    symmetry-preserving downsampling between stages (2x2 max pool on even sides, stride-2 conv on odd ones), group
    and global average pooling, and a linear head. Logits are invariant to all 8 rotations/mirrors of the image.
    Source: Weiler & Cesa, NeurIPS 2019 (escnn); Cohen & Welling, ICML 2016 (group-equivariant CNNs).
    """
    return D4CNN(image_size, in_chans, num_classes, tuple(widths))


class PreprocessedD4CNN(nn.Module):
    """The physics-free control of D4LensPINN's lens model: its D4-invariant preprocessed maps, standardised per
    channel, into :class:`D4CNN` (no U-Net, no lens, no engine). Invariant end to end."""

    capabilities = ModelCapabilities(invariant=True)

    def __init__(self, image_size: int, num_classes: int = 3, widths: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.image_size, self.in_chans = image_size, 1
        self.preprocessing = Preprocessing()
        self.norm = nn.BatchNorm2d(Preprocessing.channels, affine=False)  # per-channel affine: commutes with D4
        self.classifier = D4CNN(image_size, Preprocessing.channels, num_classes, tuple(widths))

    def forward(self, images: torch.Tensor) -> ModelOutput:
        check_images(images, self.in_chans, self.image_size, "d4_cnn_preprocessed")
        return self.classifier(self.norm(self.preprocessing(images)))


@register_model("d4_cnn_preprocessed")
def d4_cnn_preprocessed(
    image_size: int, in_chans: int = 1, num_classes: int = 3, widths: tuple[int, ...] = (4, 8, 16, 32)
) -> PreprocessedD4CNN:
    """The physics-free control: D4LensPINN's invariant preprocessed maps (image, log-contrast, |distortion|,
    |grad I|, laplacian), standardised per channel, into ``d4_cnn``: what the lens model's head gets without the
    U-Net, the macro lens and the engine."""
    if in_chans != 1:
        raise ValueError(f"d4_cnn_preprocessed works on single-band images (in_chans=1), got in_chans={in_chans}")
    return PreprocessedD4CNN(image_size, num_classes, tuple(widths))

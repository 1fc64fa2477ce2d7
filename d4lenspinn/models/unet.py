"""U-Net for the convergence map: D4-equivariant (escnn) or plain, with one shared topology.

Exact equivariance on a pixel grid constrains every resampling step (design in ARCHITECTURE.md):

* down-sampling: 2x2 max-pooling on even sizes (the 2x2 blocks tile the grid symmetrically), a stride-2 3x3
  convolution with padding 1 on odd sizes (it samples pixels 0, 2, ..., n-1, a symmetric set only when n is odd);
* up-sampling back to size ``s``: a stride-2 transposed convolution with kernel 4 (``s`` even) or kernel 3 (``s``
  odd) and padding 1, whose output grid is symmetric about the centre in both cases (no ``F.interpolate``);
* odd kernels with zero padding ``k // 2``, escnn's D4-steerable kernels, pointwise max-pool, inner batch norm and
  ReLU on regular fields; the output is ``out_channels`` trivial (scalar) fields, made non-negative with softplus
  (``non_negative=True``, the convergence) or left signed (maps that other modules read out).

So 150 -> 75 -> 38 -> 19 and 64 -> 32 -> 16 -> 8 are both exact. ``input_pool=p`` runs the whole U-Net on ``p x p``
block averages of the input and repeats each output value over its block: both commute with D4 when ``p`` divides
``n`` (the blocks tile the grid symmetrically), and the full-resolution levels, most of the cost at 150 px, go away
(150 -> 75 -> 38 -> 19 -> 10 with ``p = 2``). ``equivariant=False`` builds the same topology
from plain torch layers with ``plain_channels_per_field`` channels per regular field (2.3 matches the parameter
count: a 3x3 D4 regular-to-regular kernel has 48 free parameters per pair of 8-channel fields, a plain one 9 per
channel pair), which is the non-equivariant control.

Example::

    unet = UNet(in_channels=5, widths=(4, 8, 16, 32), image_size=64)
    kappa = unet(features)                  # (B, 5, 64, 64) -> (B, 1, 64, 64), kappa >= 0
    plain = unet.export()                   # same outputs, plain torch layers only
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from escnn import gspaces
from escnn import nn as enn
from torch import nn

__all__ = ["UNet", "check_pool", "level_sizes"]


def check_pool(pool: int, image_size: int, name: str) -> None:
    """Raise unless ``pool`` is a whole number >= 1 dividing ``image_size``, the condition under which ``pool x pool``
    blocks tile the grid symmetrically (block averaging then commutes with D4)."""
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {pool!r}")
    if image_size % pool:
        raise ValueError(
            f"{name}={pool} must divide the image side {image_size}: otherwise the pooling blocks do not tile the "
            "grid symmetrically and the D4 symmetry is lost"
        )


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Feature-map sizes from the input down to the bottleneck: ``n -> n/2`` (even) or ``(n+1)/2`` (odd)."""
    sizes = [image_size]
    for _ in range(levels):
        n = sizes[-1]
        if n < 4:
            raise ValueError(f"image_size {image_size} is too small for {levels} U-Net levels (sizes {sizes})")
        sizes.append(n // 2 if n % 2 == 0 else (n + 1) // 2)
    return sizes


class _EquivariantLayers:
    """escnn layers on regular fields of D4 (``gspaces.flipRot2dOnR2(N=4)``)."""

    def __init__(self) -> None:
        self.gspace = gspaces.flipRot2dOnR2(N=4)

    def scalars(self, count: int) -> enn.FieldType:
        return enn.FieldType(self.gspace, [self.gspace.trivial_repr] * count)

    def fields(self, count: int) -> enn.FieldType:
        return enn.FieldType(self.gspace, [self.gspace.regular_repr] * count)

    def conv_bn_relu(self, t_in, t_out, kernel: int = 3, stride: int = 1) -> nn.Module:
        conv = enn.R2Conv(t_in, t_out, kernel, padding=kernel // 2, stride=stride, bias=False)
        return enn.SequentialModule(conv, enn.InnerBatchNorm(t_out), enn.ReLU(t_out, inplace=True))

    def pool(self, t) -> nn.Module:
        return enn.PointwiseMaxPool2D(t, kernel_size=2, stride=2)

    def up(self, t_in, t_out, kernel: int) -> nn.Module:
        conv = enn.R2ConvTransposed(t_in, t_out, kernel, stride=2, padding=1, bias=False)
        return enn.SequentialModule(conv, enn.InnerBatchNorm(t_out), enn.ReLU(t_out, inplace=True))

    def head(self, t_in, t_out) -> nn.Module:
        return enn.R2Conv(t_in, t_out, 1)

    @staticmethod
    def concat(a, b):
        return a + b

    @staticmethod
    def sequential(*blocks: nn.Module) -> nn.Module:
        return enn.SequentialModule(*blocks)


class _PlainLayers:
    """The same layers in plain torch; a "field" is ``channels_per_field`` channels."""

    def __init__(self, channels_per_field: float) -> None:
        self.channels_per_field = channels_per_field

    def scalars(self, count: int) -> int:
        return count

    def fields(self, count: int) -> int:
        return max(1, round(count * self.channels_per_field))

    def conv_bn_relu(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Module:
        conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, stride=stride, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def pool(self, c: int) -> nn.Module:
        return nn.MaxPool2d(2, 2)

    def up(self, c_in: int, c_out: int, kernel: int) -> nn.Module:
        conv = nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    def head(self, c_in: int, c_out: int) -> nn.Module:
        return nn.Conv2d(c_in, c_out, 1)

    @staticmethod
    def concat(a: int, b: int) -> int:
        return a + b

    @staticmethod
    def sequential(*blocks: nn.Module) -> nn.Module:
        return nn.Sequential(*blocks)


def _run(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply an escnn block (wrapping/unwrapping its GeometricTensor) or a plain torch block to a tensor."""
    if isinstance(block, enn.EquivariantModule):
        return block(enn.GeometricTensor(x, block.in_type)).tensor
    return block(x)


class UNet(nn.Module):
    """Scalar input channels ``(B, in_channels, n, n)`` -> scalar maps ``(B, out_channels, n, n)``: by default the
    convergence ``(B, 1, n, n) >= 0``.

    ``widths`` are regular D4 fields (8 channels each) per level, top to bottom; ``len(widths) - 1`` down-samplings;
    ``input_pool``: the levels work on ``input_pool x input_pool`` block averages (the module doc).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        widths: tuple[int, ...] = (4, 8, 16, 32),
        equivariant: bool = True,
        plain_channels_per_field: float = 2.3,
        out_channels: int = 1,
        non_negative: bool = True,
        input_pool: int = 1,
    ) -> None:
        super().__init__()
        check_pool(input_pool, image_size, "input_pool")
        self.in_channels, self.image_size, self.equivariant = in_channels, image_size, equivariant
        self.non_negative, self.input_pool = non_negative, input_pool
        self.sizes = level_sizes(image_size // input_pool, len(widths) - 1)
        layers = _EquivariantLayers() if equivariant else _PlainLayers(plain_channels_per_field)
        types = [layers.fields(w) for w in widths]
        blocks: dict[str, nn.Module] = {
            "stem": layers.conv_bn_relu(layers.scalars(in_channels), types[0]),
            "enc0": layers.conv_bn_relu(types[0], types[0]),
        }
        for level in range(1, len(widths)):
            above = self.sizes[level - 1]
            if above % 2 == 0:
                blocks[f"down{level}"] = layers.pool(types[level - 1])
            else:
                blocks[f"down{level}"] = layers.conv_bn_relu(types[level - 1], types[level - 1], stride=2)
            blocks[f"enc{level}"] = layers.sequential(
                layers.conv_bn_relu(types[level - 1], types[level]), layers.conv_bn_relu(types[level], types[level])
            )
            blocks[f"up{level}"] = layers.up(types[level], types[level - 1], kernel=4 if above % 2 == 0 else 3)
            merged = layers.concat(types[level - 1], types[level - 1])
            blocks[f"dec{level - 1}"] = layers.conv_bn_relu(merged, types[level - 1])
        blocks["head"] = layers.head(types[0], layers.scalars(out_channels))
        self.blocks = nn.ModuleDict(blocks)
        self.levels = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_pool > 1:
            x = F.avg_pool2d(x, self.input_pool)  # (B, C, n/p, n/p)
        skips = [_run(self.blocks["enc0"], _run(self.blocks["stem"], x))]  # (B, C0, n/p, n/p)
        for level in range(1, self.levels + 1):
            down = _run(self.blocks[f"down{level}"], skips[-1])  # (B, C_{l-1}, s_l, s_l)
            skips.append(_run(self.blocks[f"enc{level}"], down))  # (B, C_l, s_l, s_l)
        x = skips.pop()
        for level in range(self.levels, 0, -1):
            up = _run(self.blocks[f"up{level}"], x)  # (B, C_{l-1}, s_{l-1}, s_{l-1})
            x = _run(self.blocks[f"dec{level - 1}"], torch.cat((up, skips.pop()), dim=1))
        out = _run(self.blocks["head"], x)  # (B, out_channels, n/p, n/p) scalar fields
        if self.input_pool > 1:
            out = out.repeat_interleave(self.input_pool, dim=2).repeat_interleave(self.input_pool, dim=3)
        return F.softplus(out) if self.non_negative else out

    def export(self) -> UNet:
        """A copy made of plain torch layers only (escnn ``export()``), in eval mode, with the same outputs."""
        if not self.equivariant:
            return copy.deepcopy(self).eval()
        was_training = self.training
        self.eval()  # escnn exports the filters expanded in eval mode
        exported = copy.copy(self)  # shallow: shares nothing but the (replaced) module dict below
        exported._modules = dict(self._modules)
        exported.blocks = nn.ModuleDict({name: block.export() for name, block in self.blocks.items()})
        exported.equivariant = False
        self.train(was_training)
        return exported

"""Input checks shared by every model: a clear error instead of a shape mismatch deep inside a network."""

from __future__ import annotations

import torch

__all__ = ["check_images"]


def check_images(images: torch.Tensor, in_chans: int, image_size: int, model: str) -> None:
    """Raise ``ValueError`` unless ``images`` is a float ``(B, in_chans, image_size, image_size)`` tensor."""
    expected = f"(B, {in_chans}, {image_size}, {image_size})"
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{model} expects images of shape {expected}, got {got}")
    if images.shape[1] != in_chans:
        raise ValueError(f"{model} expects {in_chans} input channel(s) {expected}, got {tuple(images.shape)}")
    if images.shape[-2:] != (image_size, image_size):
        raise ValueError(
            f"{model} was built for {image_size}x{image_size} images {expected}, got {tuple(images.shape)}; "
            f"create it with image_size={images.shape[-1]} or resize the data"
        )
    if not images.is_floating_point():
        raise ValueError(f"{model} expects floating-point images, got {images.dtype}")

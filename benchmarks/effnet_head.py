"""Is the EfficientNetV2 head of the lens model broken, or only hungry for data? Three checks on one fixed batch.

    python benchmarks/effnet_head.py [--preset model_ii] [--batch 48] [--steps 150] [--lrs 3e-4 1e-3 3e-3]

For the lens model with the design card's head (``head="tf_efficientnetv2_b0"``), the same with the head's stem
stride set to 1, and the invariant escnn head (the registered model) as the reference:

1. overfit one batch: ``--steps`` AdamW steps of cross-entropy alone on one fixed, class-balanced batch of simulated
   images, at each ``--lrs``. A head that learns drives the train-mode loss towards 0; one that cannot is a defect,
   not a lack of data.
2. train against eval mode on that batch afterwards: the loss with BatchNorm's batch statistics and with its running
   averages. A large gap is the BatchNorm defect (eval mode predicting from statistics that do not describe the
   data), which an epoch-based AUC would read as "does not learn".
3. the stem: at 64 px a stride-2 stem leaves EfficientNetV2-B0 a 2x2 final feature map; stride 1 gives it 4x4.

Prints one row per head and learning rate: the train-mode loss at the start and the end, the eval-mode loss at the
end, and both accuracies. One thread unless ``--threads``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _machine import describe_machine

from d4lenspinn.data.presets import get_preset
from d4lenspinn.data.sampling import sample_lenses
from d4lenspinn.data.simulator import render_images
from d4lenspinn.models import create_model

HEADS = {
    "invariant escnn head (registered)": {},
    "EfficientNetV2-B0 head": {"head": "tf_efficientnetv2_b0"},
    "EfficientNetV2-B0 head, stem stride 1": {"head": "tf_efficientnetv2_b0", "stem_stride": 1},
}


def fixed_batch(preset_name: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` simulated images, a third of each class, and their labels."""
    preset = get_preset(preset_name)
    per_class = batch // 3
    images = [
        render_images(sample_lenses(preset, label, per_class, torch.Generator().manual_seed(label)), preset).float()
        for label in range(3)
    ]
    labels = torch.arange(3).repeat_interleave(per_class)
    return torch.cat(images), labels


def build(preset_name: str, settings: dict) -> torch.nn.Module:
    """The lens model with ``settings``; ``stem_stride`` sets the timm head's stem stride."""
    settings = dict(settings)
    stride = settings.pop("stem_stride", None)
    preset = get_preset(preset_name)
    torch.manual_seed(0)
    model = create_model("d4lenspinn_lens", image_size=preset.n_pixels, pixel_scale=preset.pixel_scale, **settings)
    if stride is not None:
        model.head.conv_stem.stride = (stride, stride)
    return model


def overfit(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, lr: float) -> dict:
    """Train on the one batch; the losses and accuracies in train and eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0)

    def loss_and_accuracy(train_mode: bool) -> tuple[float, float]:
        model.train(train_mode)
        with torch.no_grad():
            logits = model(images).logits
        return F.cross_entropy(logits, labels).item(), (logits.argmax(1) == labels).float().mean().item()

    start, _ = loss_and_accuracy(True)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(images).logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_loss, train_accuracy = loss_and_accuracy(True)
    eval_loss, eval_accuracy = loss_and_accuracy(False)
    return dict(start=start, train=train_loss, eval=eval_loss, train_acc=train_accuracy, eval_acc=eval_accuracy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="model_ii")
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = fixed_batch(args.preset, args.batch)
    print(f"machine: {describe_machine(torch.device('cpu'))}")
    print(f"{args.preset}: one batch of {len(labels)} images, {args.steps} AdamW steps of cross-entropy\n")
    print("| head | lr | loss at start | train-mode loss | eval-mode loss | train-mode acc | eval-mode acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, settings in HEADS.items():
        for lr in args.lrs:
            row = overfit(build(args.preset, settings), images, labels, args.steps, lr)
            print(
                f"| {name} | {lr:g} | {row['start']:.3f} | {row['train']:.3f} | {row['eval']:.3f} | "
                f"{row['train_acc']:.2f} | {row['eval_acc']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Which head inputs does a trained D4LensPINN decide with? Test macro AUC with each head channel knocked out.

    python benchmarks/head_channels.py --checkpoint runs/compare_v2/d4lenspinn_lens/lr0.001/best.pt [--n-bootstrap 1000]

For a checkpoint whose model exposes ``maps`` / ``head_input`` / ``head`` (``capabilities.equivariant_maps``), the
run's test split is classified with every head channel as it is, then with one channel (or a group) replaced by
its mean over the test set (for the standardised head inputs of the lens model, 0); the drop in macro AUC and its
paired stratified bootstrap 95% interval say how much of the decision flows through that channel. No TTA (for an
invariant head it changes nothing).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _machine import describe_machine

from d4lenspinn.checkpoint import load_trained_model
from d4lenspinn.classes import CLASS_NAMES
from d4lenspinn.data import batch_loader, prepare_data
from d4lenspinn.metrics import classification_metrics, paired_difference
from d4lenspinn.models import capabilities_of
from d4lenspinn.report import markdown_table

# head-input channels of D4LensPINN with the lens model and the preprocessing, in head_input's order, with and
# without the residual channels
PREPROCESSED = ("log-contrast", "|distortion|", "|grad I|", "laplacian I")
LAYOUTS = {
    9: ("image", "delta_kappa", "I - R_macro", "spread", "I - R", *PREPROCESSED),
    6: ("image", "delta_kappa", *PREPROCESSED),
}


def knockouts(count: int) -> dict[str, tuple[int, ...]]:
    """Name -> channels to knock out: each channel alone, then the groups the layout has."""
    names = LAYOUTS.get(count, tuple(f"channel {c}" for c in range(count)))
    single = {name: (c,) for c, name in enumerate(names)}
    groups = {"the preprocessed maps": tuple(range(count - 4, count))} if count in LAYOUTS else {}
    if count == 9:
        groups["physics (I - R_macro, spread, I - R)"] = (2, 3, 4)
    return single | groups | {"all but the image": tuple(range(1, count))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    model, config, _ = load_trained_model(args.checkpoint)
    if not capabilities_of(model).equivariant_maps:
        raise SystemExit(f"{args.checkpoint}: the model does not expose maps / head_input / head")
    stacked, labels = [], []
    with torch.no_grad():
        for batch in batch_loader(prepare_data(config.data, seed=config.seed).test, 64):
            stacked.append(model.head_input(model.maps(batch.images)))
            labels.append(batch.labels)
    stacked, labels = torch.cat(stacked), torch.cat(labels).numpy()
    means = stacked.mean(dim=(0, 2, 3), keepdim=True)

    def probabilities(drop: tuple[int, ...] = ()) -> np.ndarray:
        x = stacked.clone()
        x[:, list(drop)] = means[:, list(drop)]
        with torch.no_grad():
            return torch.cat([model.head(chunk).softmax(-1) for chunk in x.split(128)]).numpy()

    full = probabilities()
    base = classification_metrics(full, labels, CLASS_NAMES)["macro_auc"]
    print(f"\n{args.checkpoint}: test macro AUC {base:.3f} on {len(labels)} images, no TTA")
    rows = []
    for name, channels in knockouts(stacked.shape[1]).items():
        drop = paired_difference(full, probabilities(channels), labels, CLASS_NAMES, args.n_bootstrap, args.seed)
        (low, high), gain = drop["ci95"], drop["gain"]
        rows.append([name, f"{base - gain:.3f}", f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"])
    headers = ["knocked out (set to its test mean)", "macro AUC", "drop [paired 95% CI]"]
    print(markdown_table(headers, rows, align="lrl"))


if __name__ == "__main__":
    main()

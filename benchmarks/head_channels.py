"""Which head inputs does a trained D4LensPINN decide with? Test macro AUC with each head channel knocked out.

    python benchmarks/head_channels.py --checkpoint runs/compare_v2/d4lenspinn_lens/lr0.001/best.pt [--n-bootstrap 1000]

For a checkpoint of a D4LensPINN (``forward_features`` / ``head_channels`` / ``forward_head``, its channels named by
``head_channel_names``), the run's test split is classified with every head channel as it is, then with one channel
(or a group) replaced by
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
from d4lenspinn.models import D4LensPINN
from d4lenspinn.models.preprocessing import Preprocessing
from d4lenspinn.report import markdown_table

GROUPS = {  # knocked out together where the model has every channel of the group
    "the preprocessed maps": Preprocessing.channel_names[1:],
    "physics (I - R_macro, spread, I - R)": ("I - R_macro", "spread", "I - R"),
}


def knockouts(names: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Name -> channels to knock out, for head channels ``names``: each alone, then the groups the model has."""
    single = {name: (c,) for c, name in enumerate(names)}
    groups = {
        group: tuple(names.index(member) for member in members)
        for group, members in GROUPS.items()
        if set(members) <= set(names)
    }
    return single | groups | {"all but the image": tuple(range(1, len(names)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(describe_machine(torch.device("cpu")))
    model, config, _ = load_trained_model(args.checkpoint)
    if not isinstance(model, D4LensPINN):
        raise SystemExit(f"{args.checkpoint}: {type(model).__name__} is no D4LensPINN (no named head channels)")
    stacked, labels = [], []
    with torch.no_grad():
        for batch in batch_loader(prepare_data(config.data, seed=config.seed).test, 64):
            stacked.append(model.head_channels(model.forward_features(batch.images)))
            labels.append(batch.labels)
    stacked, labels = torch.cat(stacked), torch.cat(labels).numpy()
    means = stacked.mean(dim=(0, 2, 3), keepdim=True)

    def probabilities(drop: tuple[int, ...] = ()) -> np.ndarray:
        x = stacked.clone()
        x[:, list(drop)] = means[:, list(drop)]
        with torch.no_grad():
            return torch.cat([model.forward_head(chunk).softmax(-1) for chunk in x.split(128)]).numpy()

    full = probabilities()
    base = classification_metrics(full, labels, CLASS_NAMES)["macro_auc"]
    print(f"\n{args.checkpoint}: test macro AUC {base:.3f} on {len(labels)} images, no TTA")
    rows = []
    for name, channels in knockouts(model.head_channel_names).items():
        drop = paired_difference(full, probabilities(channels), labels, CLASS_NAMES, args.n_bootstrap, args.seed)
        (low, high), gain = drop["ci95"], drop["gain"]
        rows.append([name, f"{base - gain:.3f}", f"{gain:+.3f} [{low:+.3f}, {high:+.3f}]"])
    headers = ["knocked out (set to its test mean)", "macro AUC", "drop [paired 95% CI]"]
    print(markdown_table(headers, rows, align="lrl"))


if __name__ == "__main__":
    main()

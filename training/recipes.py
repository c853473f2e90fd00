"""Named training recipes: settings of `TrainConfig` that go together.

    paper       the paper's (section 5), `alexnet train`'s default: SGD, momentum 0.9,
                weight decay 5e-4, lr 0.01 divided by 10 when the validation error stops
                improving, dropout 0.5.
    quickstart  for a short run on CPU (the built-in default of `alexnet quickstart`): the
                same network and augmentation, batch 32 (four times the steps per epoch
                of the paper's 128, for the same compute), with
                AdamW (lr 5e-4, decoupled weight decay 0.05, none on biases and batch-norm
                parameters), a schedule fixed in advance (one epoch of linear warmup, then
                a cosine to 0 at the last batch), label smoothing 0.1 and dropout 0.2.

Why these, for a run of a few epochs: the paper's plateau rule suits a run of 90 epochs; it drops
the lr only after the error has stalled for `lr_patience` epochs, so a short run ends
at its initial lr, far from a minimum. A cosine spends the last epochs at a small lr,
where most of the error goes (the paper's own drops gave it the same gain, later). AdamW
scales each parameter's step by its own gradient history, which moves the 58 M weights of
fc6/fc7 (no batch norm there) much faster than SGD at a safe lr; dropout 0.5 slows the
fitting of those layers more than a short run can afford. Measured figures: the README.
"""

from __future__ import annotations

from dataclasses import replace

from training.train import TrainConfig

RECIPES: dict[str, dict] = {
    "paper": {},  # TrainConfig's own defaults
    "quickstart": {
        "batch_size": 32,
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "label_smoothing": 0.1,
        "dropout": 0.2,
    },
}


def recipe(name: str) -> dict:
    """The TrainConfig fields a recipe sets (the others keep their defaults)."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Only {', '.join(RECIPES)} are supported.")
    return dict(RECIPES[name])


def with_recipe(config: TrainConfig, name: str) -> TrainConfig:
    """`config` with a recipe's settings."""
    return replace(config, **recipe(name))

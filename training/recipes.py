"""Named training recipes: settings of `TrainConfig` that go together.

    paper       the paper's (section 5), `alexnet train`'s default: SGD, momentum 0.9,
                lr 0.01 divided by 10 when the validation error stops improving.
    quickstart  for a short run on CPU (the built-in default of `alexnet quickstart`): the
                same network, data, batches and epochs, so the same compute, but a schedule
                fixed in advance that a short run can finish: a higher peak lr (0.05, which
                batch normalization tolerates) reached by a one-epoch linear warmup and
                annealed to 0 by a cosine at the last batch, and label smoothing 0.1.

The paper's plateau rule suits a run of 90 epochs: it drops the lr only after the error
has stalled for `lr_patience` epochs, so a ten-epoch run ends at the initial lr, still far
from a minimum. A cosine schedule spends the last epochs at a small lr, where most of the
error goes (the paper's own drops gave it the same gain, later).
"""

from __future__ import annotations

from dataclasses import replace

from training.train import TrainConfig

RECIPES: dict[str, dict] = {
    "paper": {},  # TrainConfig's own defaults
    "quickstart": {
        "optimizer": "sgd",
        "lr": 0.05,
        "schedule": "cosine",
        "warmup_epochs": 1.0,
        "label_smoothing": 0.1,
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

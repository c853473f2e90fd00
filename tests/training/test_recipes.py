"""Named training recipes (`--recipe`), the cosine schedule and the optimizers they choose."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from alexnet.train import config_from, get_args_parser
from training.recipes import RECIPES
from training.train import TrainConfig, make_optimizer, make_scheduler


def parsed(*argv: str) -> TrainConfig:
    return config_from(get_args_parser().parse_args(["--data", "d", *argv]))


def test_the_paper_stays_the_default_recipe() -> None:
    c = parsed()
    assert (c.optimizer, c.lr, c.schedule, c.label_smoothing) == ("sgd", 0.01, "plateau", 0.0)
    assert c.weight_decay == 5e-4 and c.momentum == 0.9


def test_a_recipe_sets_its_options_and_an_option_given_wins() -> None:
    c = parsed("--recipe", "quickstart")
    for name, value in RECIPES["quickstart"].items():
        assert getattr(c, name) == value
    c = parsed("--recipe", "quickstart", "--lr", "0.02", "--label-smoothing", "0")
    assert (c.lr, c.label_smoothing, c.schedule) == (0.02, 0.0, "cosine")


def _lrs(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(config, model)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(config.epochs * steps_per_epoch):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_warms_up_linearly_then_anneals_to_zero_at_the_last_batch() -> None:
    config = TrainConfig(data=Path("d"), epochs=10, lr=0.05, schedule="cosine", warmup_epochs=1)
    lrs = _lrs(config, steps_per_epoch=18)
    warm = lrs[:18]
    assert warm == sorted(warm) and warm[0] == pytest.approx(0.05 / 19)
    assert max(lrs) == pytest.approx(0.05) and lrs[18] == pytest.approx(0.05)
    after = lrs[18:]
    assert after == sorted(after, reverse=True)
    # halfway through the cosine the lr is half the peak; the last batch runs near 0
    assert lrs[18 + 81] == pytest.approx(0.025)
    assert lrs[-1] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi * 161 / 162)))
    assert lrs[-1] < 0.05 * 1e-3


def test_adamw_does_not_decay_biases_and_unknown_choices_are_named() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    config = TrainConfig(data=Path("d"), optimizer="adamw", weight_decay=0.05)
    groups = make_optimizer(config, model).param_groups
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert [len(g["params"]) for g in groups] == [1, 3]  # conv weight | conv bias, bn w and b
    with pytest.raises(ValueError, match="Only sgd, adamw"):
        make_optimizer(TrainConfig(data=Path("d"), optimizer="rmsprop"), model)
    with pytest.raises(ValueError, match="Only plateau, cosine"):
        make_scheduler(
            TrainConfig(data=Path("d"), schedule="step"), make_optimizer(config, model), 1
        )

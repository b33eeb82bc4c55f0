"""TrainConfig: validated, importable without torch, the one source of the CLI's defaults."""

from __future__ import annotations

import dataclasses

import pytest

from voicenlu.cli import build_parser
from voicenlu.config import TrainConfig
from voicenlu.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, r"epochs \(--epochs\) must be more than 0"),
        ({"batch_size": 0}, r"batch_size \(--batch-size\) must be at least 1"),
        ({"batch_size": 2.5}, r"batch_size \(--batch-size\) must be int"),
        ({"label_smoothing": 1.0}, r"label_smoothing \(--label-smoothing\) must be less than 1"),
        ({"head_lr": float("nan")}, r"head_lr \(--head-lr\) must be a finite number"),
        ({"freeze_backbone": "yes"}, r"freeze_backbone \(--freeze-backbone\) must be bool"),
        ({"backbone": " "}, r"backbone \(--backbone\) must not be empty"),
        ({"seed": True}, r"seed \(--seed\) must be int"),
        (
            {"contrastive_pairs": 100, "freeze_backbone": True},
            r"--contrastive-pairs\) trains the encoder, which freeze_backbone",
        ),
    ],
)
def test_bad_values_name_the_field(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_unknown_option_lists_the_known_ones():
    with pytest.raises(ConfigError, match="Unknown training option 'epoch': choose from backbone"):
        TrainConfig.from_options(epoch=3)
    assert TrainConfig.from_options(epochs=3).epochs == 3


def test_cli_defaults_are_the_config_defaults():
    args = build_parser().parse_args(["train"])
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        assert getattr(args, f.name) == getattr(defaults, f.name), f.name
    args = build_parser().parse_args(["train", "--batch-size", "8", "--freeze-backbone"])
    assert args.batch_size == 8 and args.freeze_backbone is True

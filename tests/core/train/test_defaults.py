"""One table of defaults: train_config and model_settings are what taan-core train uses."""

from __future__ import annotations

import pytest

from taan_core.data.planted import PLANTED_STUDENT_TAAN
from taan_core.train import DATASET_DEFAULTS, TrainConfig, model_settings, train_config


@pytest.mark.parametrize("dataset", list(DATASET_DEFAULTS))
def test_train_config_takes_the_data_sets_defaults(dataset):
    d = DATASET_DEFAULTS[dataset]
    config = train_config(dataset)
    for key in ("epochs", "batch_size", "sampler", "lr", "weight_decay", "schedule", "patience", "shared_warmup",
                "starts", "threads"):
        assert getattr(config, key) == d[key], key
    assert config.optimizer == TrainConfig().optimizer  # not in the table: TrainConfig's own default


def test_given_fields_win_and_none_means_not_given():
    config = train_config("school", epochs=3, lr=None, out="x")
    assert config.epochs == 3 and config.lr == DATASET_DEFAULTS["school"]["lr"] and config.out == "x"
    with pytest.raises(TypeError, match="hidden is not a TrainConfig field"):
        train_config("school", hidden=[4])
    with pytest.raises(ValueError, match="epochs"):
        train_config("school", epochs=0)


def test_model_settings_follow_the_table():
    school = model_settings("school", "taan")
    assert school == {"hidden": [32, 32], "num_hinges": 8, "shared_head": True}
    assert model_settings("planted", "taan") == {"hidden": [32, 32, 32], "num_hinges": 4, **PLANTED_STUDENT_TAAN}
    hard = model_settings("planted", "hard", hidden=[8])
    assert hard == {"hidden": [8]}  # no hinges and no TAAN-only fields for a model without them
    assert "shared_head" not in model_settings("school", "mmoe")
    # Copies: changing a result does not change the table.
    school["hidden"].append(1)
    assert DATASET_DEFAULTS["school"]["hidden"] == [32, 32]

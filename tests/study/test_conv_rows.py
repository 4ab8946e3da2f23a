"""The study on images: every row of omniglot has TAANConv's trunk, every other data set's an MLP."""

from __future__ import annotations

import pytest

from taan_core.models import MODELS, build_model
from taan_study import BRANCHED_VARIANTS, VARIANTS, StudyConfig, format_tables, run_study
from taan_study.budgets import BUDGETS, QUICK_BUDGETS, _model_config, registry_of
from tests.core.data.test_omniglot import _tree


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_model_has_a_conv_variant_built_from_the_budget(variant):
    registry, _ = VARIANTS[variant]
    conv = registry_of(registry, (1, 48, 48))
    assert conv == f"{registry}-conv" and conv in MODELS
    assert registry_of(registry, (64,)) == registry  # digits, planted, exam: flat features, the MLPs
    budget = QUICK_BUDGETS["omniglot"]
    model = build_model(conv, (1, 48, 48), [3, 2], **_model_config(conv, budget))
    assert model.config.hidden == budget["hidden"]
    assert registry_of("branched", (1, 48, 48)) == "branched-conv"


def test_the_omniglot_budget_is_the_command_lines():
    from taan_core.train._defaults import DATASET_DEFAULTS

    d = DATASET_DEFAULTS["omniglot"]
    budget = BUDGETS["omniglot"]
    assert (budget["hidden"], budget["num_hinges"], budget["epochs"], budget["lr"]) == \
        (d["hidden"], d["hinges"], d["epochs"], d["lr"])
    assert QUICK_BUDGETS["omniglot"]["data_config"] == {"image_size": 48}


def test_omniglot_needs_its_folder(tmp_path):
    with pytest.raises(ValueError, match="data set 'omniglot' reads files: pass data_path"):
        StudyConfig(["omniglot"], out=tmp_path)


@pytest.mark.slow
def test_quick_study_on_images_trains_the_conv_variants(tmp_path):
    root = _tree(tmp_path / "omniglot", {"images_background": {"Greek": 3, "Latin": 2}})
    results = run_study(StudyConfig(["omniglot"], 1, True, tmp_path / "study", data_path=root, grid=[0.1],
                                    workers=1, timing_repeats=0, figures=True))
    assert results["settings"]["budgets"]["omniglot"]["input_shape"] == [1, 48, 48]
    by_model = {r["model"]: r for r in results["runs"] if r["registry"] != "linear"}
    assert set(by_model) == set(VARIANTS) | set(BRANCHED_VARIANTS)
    # The pixels' logistic regressions are rows too; the best TAANConv's figures are drawn.
    assert any(r["registry"] == "linear" for r in results["runs"]) or results["linear_notes"]["omniglot"]
    assert results["figures"] and not any("error" in f for f in results["figures"])
    for variant, (registry, _) in VARIANTS.items():
        assert by_model[variant]["registry"] == f"{registry}-conv", variant
    for variant in BRANCHED_VARIANTS:
        run = by_model[variant]
        # One level per conv stage (4) and dense layer (1), as the TAANConv's tree.
        assert run["registry"] == "branched-conv" and len(run["tree"]) == 5
    assert by_model["TAAN"]["tree"] is not None and len(by_model["TAAN"]["tree"]) == 5
    assert all(r["test_main"] == r["test_main"] for r in results["runs"])  # finite, not NaN
    budget = format_tables(results)["budget"]
    assert "TAANConv's conv stages" in budget and "| omniglot | 2 |" in budget and "| conv | 32 |" in budget


def test_the_budget_table_names_the_trunk_of_older_results():
    from taan_study.tables import _trunk

    runs = [{"dataset": "omniglot", "registry": "hard-conv"}, {"dataset": "digits", "registry": "hard"}]
    results = {"settings": {"budgets": {"omniglot": {}, "digits": {}, "exam": {"input_shape": [12]}}}, "runs": runs}
    assert [_trunk(results, d) for d in ("omniglot", "digits", "exam")] == ["conv", "MLP", "MLP"]

"""Model behaviour: determinism, learning, train/serve agreement and race-free promotion (no Prefect)."""

from __future__ import annotations

import numpy as np
import polars as pl

from retrainer.config import ModelConfig, parse_project
from retrainer.cycle.decide import Outcome, conclude
from retrainer.cycle.plan import Trigger
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec, feature_matrix
from retrainer.data.synth import demo_config, make_batch
from retrainer.judge.metrics import point_metric
from retrainer.judge.policy import HoldoutScores, judge
from retrainer.model.training import TrainedModel, train
from tests.conftest import Project


def _config() -> ModelConfig:
    return parse_project(demo_config(), "test").model("churn")


def _fit(frame: pl.DataFrame, seed_offset: int = 0) -> TrainedModel:
    config = _config()
    spec = FeatureSpec.build(config, schema_for(config, frame.columns, None))
    cut = int(frame.height * 0.9)
    return train(frame.head(cut), frame.slice(cut), spec, config.lightgbm)


def test_same_data_and_seeds_give_the_same_model() -> None:
    frame = make_batch(5000, seed=1)
    probe = make_batch(500, seed=2)
    first, second = _fit(frame), _fit(frame)
    assert first.best_iteration == second.best_iteration
    np.testing.assert_array_equal(first.predict(probe), second.predict(probe))


def test_model_learns_the_signal() -> None:
    trained = _fit(make_batch(8000, seed=3))
    holdout = make_batch(3000, seed=4)
    auc = point_metric("binary", "roc_auc", holdout["churned"].to_numpy(), trained.predict(holdout))
    assert auc > 0.75


def test_unseen_and_null_categories_encode_as_unknown_and_missing() -> None:
    config = _config()
    frame = make_batch(4, seed=5).with_columns(plan=pl.Series(["basic", "platinum", None, "enterprise"]))
    spec = FeatureSpec.build(config, schema_for(config, frame.columns, None))
    plan = feature_matrix(frame, spec)[:, spec.features.index("plan")]
    assert plan[0] == 0 and plan[1] == 3 and np.isnan(plan[2]) and plan[3] == 2


def test_registered_model_serves_exactly_what_was_trained(project: Project) -> None:
    trained = _fit(make_batch(5000, seed=6))
    registry = project.workspace().registry
    run_id = registry.start_run("churn", "consistency", {}, {})
    version = registry.register("churn", run_id, trained, make_batch(5, seed=1).to_pandas())
    raw = make_batch(400, seed=7).with_columns(
        plan=pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit("platinum")).otherwise(pl.col("plan")),
        region=pl.when(pl.int_range(pl.len()) % 11 == 0).then(None).otherwise(pl.col("region")),
    )
    served = registry.predict("churn", version.version, raw.drop("churned").to_pandas())
    np.testing.assert_allclose(served, trained.predict(raw), rtol=0, atol=1e-12)


def test_two_promotions_judged_against_the_same_champion_promote_once(project: Project) -> None:
    ws = project.workspace()
    registry, history = ws.registry, ws.history("churn")
    trained = _fit(make_batch(4000, seed=8))
    holdout = make_batch(1000, seed=9)
    versions = []
    for name in ("a", "b"):
        run_id = registry.start_run("churn", name, {}, {})
        versions.append(registry.register("churn", run_id, trained, holdout.head(5).to_pandas()))
    scores_y = holdout["churned"].to_numpy()
    judgement = judge("binary", "roc_auc", HoldoutScores(scores_y, trained.predict(holdout)), _config().promotion)
    assert judgement.verdict == "promote"
    outcomes = [conclude(registry, history, v, None, judgement, "enforce", Trigger("race")) for v in versions]
    assert [o.outcome for o in outcomes] == [Outcome.PROMOTED, Outcome.SUPERSEDED]
    assert registry.alias("churn", "champion").version == versions[0].version
    assert "champion moved to v1" in outcomes[1].reasons[0]
    assert [e.outcome for e in history.entries()] == ["Promoted", "Superseded"]

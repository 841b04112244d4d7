"""Which earlier champions are judged again: real MLflow on SQLite, real LightGBM."""

from __future__ import annotations

import polars as pl

from retrainer.config import parse_project
from retrainer.cycle.decide import Outcome, conclude, earlier_candidates
from retrainer.cycle.plan import DataSplit, Frames, Trigger, Window
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec
from retrainer.data.store import BatchRecord
from retrainer.data.synth import demo_config, make_batch
from retrainer.judge.policy import HoldoutScores, judge
from retrainer.model.registry import VersionInfo
from retrainer.model.training import train
from tests.conftest import Project

LINEAGE = {"retrainer.training_batches": "a,b", "retrainer.holdout_batches": "c", "retrainer.holdout_share": "0.5"}


def test_only_earlier_champions_with_lineage_unseen_rows_and_the_same_features_are_candidates(
    project: Project,
) -> None:
    config = parse_project(demo_config(), "test").model("churn")
    frame = make_batch(2000, seed=31)
    spec = FeatureSpec.build(config, schema_for(config, frame.columns, None))
    narrow_config = config.model_copy(update={"features": spec.features[:-1]})
    fewer = FeatureSpec.build(narrow_config, schema_for(narrow_config, [], None))
    full, narrow = (train(frame.head(1800), frame.slice(1800), s, config.lightgbm) for s in (spec, fewer))
    ws = project.workspace()
    registry, history = ws.registry, ws.history("churn")

    def register(name: str, tags: dict[str, str], narrow_features: bool = False) -> VersionInfo:
        run_id = registry.start_run("churn", name, {}, tags)
        return registry.register("churn", run_id, narrow if narrow_features else full, frame.head(5).to_pandas())

    outside = register("outside", {})  # no lineage: registered some other way
    other = register("other-features", LINEAGE, narrow_features=True)
    seen = register("seen-holdout", {**LINEAGE, "retrainer.training_batches": "a,b,d"})
    good = register("good", LINEAGE)
    current = register("current", LINEAGE)
    judgement = judge(
        "binary", "roc_auc", HoldoutScores(frame["churned"].to_numpy(), full.predict(frame)), config.promotion
    )
    chain = [outside, other, seen, good, current]
    for before, after in zip([None, *chain], chain, strict=False):
        decided = conclude(
            registry, history, after, before, judgement, "enforce", Trigger("test", flow_run_id=after.version)
        )
        assert decided.outcome is Outcome.PROMOTED
    holdout = frame.slice(1800)
    split = DataSplit(
        [], [BatchRecord("d", "d", 200, [], None, None, "x", "2026-01-01T00:00:00+00:00")], False, spec.features, 0.5
    )
    frames = Frames([Window(0, frame.head(10), frame.slice(10, 10))], holdout, spec)

    found, passed_over = earlier_candidates(registry, history, current, split, frames, 4)

    assert [e.version.version for e in found] == [good.version]
    assert found[0].predictions.shape == (holdout.height,) and found[0].run_tags["retrainer.holdout_batches"] == "c"
    assert passed_over == [
        f"earlier champion v{seen.version} trained on rows of d",
        f"earlier champion v{other.version} has other features than this retrain",
        f"earlier champion v{outside.version} has no lineage of its training rows (not trained by retrainer)",
    ]
    assert isinstance(holdout, pl.DataFrame)

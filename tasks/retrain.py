"""Retrain tasks: one step of the cycle each, over ``retrainer.retraining``."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from retrainer import events
from retrainer.judgement import Judgement
from retrainer.registry import CHALLENGER, CHAMPION, VersionInfo
from retrainer.report import decision_markdown
from retrainer.retraining import (
    DataSplit,
    Decision,
    Frames,
    Outcome,
    Trigger,
    conclude,
    evaluate,
    holdout_metric_values,
    lineage_json,
    lineage_tags,
    load_frames,
    plan_split,
    run_params,
    score_holdout,
)
from retrainer.training import TrainedModel, train
from tasks._common import artifact_key, only_transient, workspace

_RETRY_DELAYS = [2.0, 5.0, 15.0]


@task(name="describe-trigger")
def describe_trigger(reason: str, event_id: str | None) -> Trigger:
    """Capture why this run happens, with the Prefect flow run id."""
    from prefect.runtime import flow_run

    return Trigger(reason=reason, event_id=event_id, flow_run_id=flow_run.id)


@task(name="plan-training-data")
def plan_training_data(model: str) -> DataSplit:
    """Choose the training window and the holdout from the accepted batches."""
    ws = workspace()
    return plan_split(ws.store(model).manifest(), ws.model(model))


@task(name="load-frames", cache_policy=NO_CACHE)
def load_training_frames(model: str, split: DataSplit) -> Frames:
    """Read the split's batches once, only the columns the model uses."""
    ws = workspace()
    return load_frames(ws.store(model), split, ws.model(model))


@task(name="train-challenger", cache_policy=NO_CACHE)
def train_challenger(model: str, frames: Frames) -> TrainedModel:
    """Fit the LightGBM challenger with early stopping."""
    return train(frames.train, frames.valid, frames.spec, workspace().model(model).lightgbm)


@task(
    name="register-challenger",
    cache_policy=NO_CACHE,
    retries=len(_RETRY_DELAYS),
    retry_delay_seconds=_RETRY_DELAYS,
    retry_condition_fn=only_transient,
)
def register_challenger(
    model: str, split: DataSplit, frames: Frames, trained: TrainedModel, trigger: Trigger
) -> VersionInfo:
    """Log the MLflow run (params, lineage, trigger), register the model and alias it ``challenger``."""
    ws = workspace()
    registry = ws.registry
    run_name = f"retrain-{trigger.reason[:40]}"
    run_id = registry.start_run(
        model, run_name, run_params(ws.model(model), frames, trained), lineage_tags(split, trigger)
    )
    registry.log_dict(run_id, lineage_json(split, trigger), "lineage.json")
    version = registry.register(model, run_id, trained, frames.holdout.head(5).to_pandas())
    registry.set_alias(model, CHALLENGER, version.version)
    return version


@task(
    name="read-champion",
    retries=len(_RETRY_DELAYS),
    retry_delay_seconds=_RETRY_DELAYS,
    retry_condition_fn=only_transient,
)
def read_champion(model: str) -> VersionInfo | None:
    """The version currently aliased ``champion`` (the one the challenger is judged against)."""
    return workspace().registry.alias(model, CHAMPION)


@task(name="judge-challenger", cache_policy=NO_CACHE)
def judge_challenger(
    model: str, challenger: VersionInfo, champion: VersionInfo | None, frames: Frames
) -> Judgement | None:
    """Score both versions on the same holdout rows and apply the policy; ``None`` when disabled."""
    ws = workspace()
    config = ws.model(model)
    if config.promotion.mode == "disabled":
        return None
    scores = score_holdout(ws.registry, model, challenger.version, champion, frames, config.slices)
    judgement = evaluate(config, scores)
    if challenger.run_id:
        ws.registry.log_metrics(challenger.run_id, holdout_metric_values(judgement))
    return judgement


@task(
    name="conclude-decision",
    retries=len(_RETRY_DELAYS),
    retry_delay_seconds=_RETRY_DELAYS,
    retry_condition_fn=only_transient,
)
def conclude_decision(
    model: str, challenger: VersionInfo, champion: VersionInfo | None, judgement: Judgement | None, trigger: Trigger
) -> Decision:
    """Promote by compare-and-set if earned; record the decision on the version and in the history."""
    ws = workspace()
    decision = conclude(
        ws.registry, ws.history(model), challenger, champion, judgement, ws.model(model).promotion.mode, trigger
    )
    if challenger.run_id:
        ws.registry.set_run_tags(challenger.run_id, {"retrainer.outcome": decision.outcome.value})
        ws.registry.end_run(challenger.run_id)
    return decision


@task(name="publish-decision", cache_policy=NO_CACHE)
def publish_decision(decision: Decision, split: DataSplit, challenger: VersionInfo) -> str:
    """Markdown decision record in the Prefect UI; returns the artifact id."""
    links = {"MLflow run": f"runs:/{challenger.run_id}", "model version": challenger.uri}
    markdown = decision_markdown(decision.message, decision.judgement, split.lineage(), links)
    artifact = create_markdown_artifact(
        markdown, key=artifact_key("decision", decision.model), description=decision.message
    )
    return str(artifact)


@task(name="describe-decision")
def decision_event(decision: Decision, trigger: Trigger) -> events.Event:
    """``model.promoted`` for a promotion, ``model.rejected`` for any other outcome."""
    name = events.MODEL_PROMOTED if decision.outcome is Outcome.PROMOTED else events.MODEL_REJECTED
    payload = {
        "version": decision.version,
        "outcome": decision.outcome.value,
        "champion_before": decision.champion_before,
        "champion_after": decision.champion_after,
        "reasons": decision.reasons,
        "trigger": trigger.as_dict(),
    }
    return events.Event(name, decision.model, payload, key=f"{decision.model}:v{decision.version}")

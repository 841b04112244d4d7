"""Retrain tasks: one step of the cycle each, over ``retrainer.cycle``."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import polars as pl
from prefect import State, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun

from retrainer import events
from retrainer.config import ModelConfig
from retrainer.cycle.decide import (
    ChampionScores,
    Decision,
    Outcome,
    announced,
    announcement_event,
    conclude,
    earlier_candidates,
    evaluate,
    holdout_metric_values,
    holdout_scores,
    predict_holdout,
    reconcile,
)
from retrainer.cycle.labels import LabelCount, count_labels
from retrainer.cycle.plan import (
    DataSplit,
    Frames,
    Trigger,
    holdout_batches_seen,
    lineage_json,
    lineage_tags,
    load_frames,
    plan_split,
    run_params,
)
from retrainer.cycle.record import decision_markdown
from retrainer.cycle.refit import Promotable, refit_recipe, refit_wanted
from retrainer.cycle.windows import ChosenChallenger, WindowChoice, choose_window, corrected_policy
from retrainer.data.features import label_vector
from retrainer.errors import TransientError
from retrainer.inbound.sender import transient_http_error
from retrainer.judge.policy import Judgement
from retrainer.model.history import Intent
from retrainer.model.registry import CHALLENGER, CHAMPION, VersionInfo
from retrainer.model.training import TrainedModel, train
from retrainer.monitor.incidents import (
    MAX_ATTACHED,
    AlertRef,
    alerts_since,
    attach_alerts,
    claim_retrain,
    retrain_failed,
    retrain_finished,
    retrain_waits_for_labels,
    seconds_until_window_closes,
)
from retrainer.monitor.reference import reference_rows, reference_sample, store_reference
from tasks._common import artifact_key, registry_task, store_task, workspace

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

# The server answers at most 50 events a request (asking for more is an HTTP 422).
EVENTS_PAGE = 50
ANSWERS_SAMPLE = 5


@task(name="describe-trigger")
def describe_trigger(
    reason: str,
    event_id: str | None,
    incident_key: str | None,
    event_name: str | None = None,
    event_payload: dict[str, Any] | None = None,
) -> Trigger:
    """Capture why this run happens (the triggering event, if any), with the Prefect flow run id."""
    from prefect.runtime import flow_run

    return Trigger(
        reason=reason,
        event_id=event_id or None,
        incident_key=incident_key or None,
        event_name=event_name or None,
        event_payload=dict(event_payload or {}),
        flow_run_id=flow_run.id,
    )


@store_task("count-labels")
def count_incident_labels(model: str, config: ModelConfig, trigger: Trigger) -> LabelCount | None:
    """The labels a retrain of a traffic incident can use (None for any other retrain); see ``cycle.labels``."""
    ws = workspace()
    data = ws.data(model)
    state = ws.incidents(model).read()
    needed = config.labels.min_rows_after_incident
    found = count_labels(state, trigger.incident_key, data.labelled.manifest(), data.traffic.manifest(), needed)
    if found is not None:
        print(found.note)
    return found


@store_task("wait-for-labels")
def wait_for_labels(model: str, labels: LabelCount) -> None:
    """End this retrain without deciding: its incident stays open until labels join (``labels.joined``)."""
    now = datetime.now(UTC)
    book = workspace().incidents(model)
    book.update(lambda state: (retrain_waits_for_labels(state, now, labels.incident_key), None))


@store_task("claim-retrain")
def claim_retrain_slot(model: str, config: ModelConfig, trigger: Trigger) -> str | None:
    """Record the retrain as in flight, unless it repeats one (see ``claim_retrain``): then say why."""
    now, policy = datetime.now(UTC), config.drift.incident
    book = workspace().incidents(model)
    return book.update(lambda state: claim_retrain(state, now, trigger.incident_key, trigger.event_id, policy))


def only_transient_http(task: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry only when the Prefect API or a store could not be reached (or answered 429 / 5xx)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - anything but a transient failure is final
        return isinstance(exc, TransientError) or transient_http_error(exc)
    return False


@task(
    name="attach-alerts",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1.0, 3.0, 10.0],
    retry_condition_fn=only_transient_http,
)
def attached_alerts(model: str, trigger: Trigger, whole_window: bool = False) -> Trigger:
    """Attach to this retrain the model's alerts the server coalesced into it; return the trigger counting them.

    Reads the model's ``drift.detected`` and ``performance.degraded`` events from ``alerts_since`` on
    (its triggering event, or its start, minus a margin, or where the model's previous read ended), at
    most ``MAX_ATTACHED``, and records them in the incident book (see
    ``retrainer.monitor.incidents.attach_alerts``). Run again later, it adds those that arrived since.
    With ``whole_window``, it first waits until every alert the trigger coalesced into this run can be
    on the server (``coalescing_closes``: at most ~20 s after the triggering event, usually already past).
    """
    from prefect import get_client

    book = workspace().incidents(model)
    state = book.read()
    started = state.last_retrain_started_at or datetime.now(UTC)
    with get_client(sync_client=True) as client:
        occurred = _occurred(client, trigger.event_id)
        if whole_window and trigger.event_name in events.INCIDENT_EVENTS:
            time.sleep(seconds_until_window_closes(occurred, datetime.now(UTC)))
        since = alerts_since(occurred, started, state.alerts_read_until)
        read_at = datetime.now(UTC)
        found = _alert_events(client, model, since)
    attachment = book.update(
        lambda state: attach_alerts(state, read_at, trigger.incident_key, trigger.flow_run_id, found, read_at)
    )
    keys = attachment.incident_keys
    print(f"{model}: this retrain answers {len(keys)} alert(s) since {since.isoformat(timespec='seconds')}")
    return replace(trigger, answers=len(keys), answers_sample=keys[:ANSWERS_SAMPLE])


def _occurred(client: SyncPrefectClient, event_id: str | None) -> datetime | None:
    """When the triggering event happened, if it is a Prefect event the server still has."""
    from prefect.events.filters import EventFilter, EventIDFilter

    try:
        wanted = UUID(event_id or "")
    except ValueError:  # a run started by hand, or with a made-up id
        return None
    page = client.read_events(EventFilter(id=EventIDFilter(id=[wanted])), limit=1)
    return page.events[0].occurred if page.events else None


def _alert_events(client: SyncPrefectClient, model: str, since: datetime) -> list[AlertRef]:
    """The model's incident events from ``since`` on, oldest first, at most ``MAX_ATTACHED`` (paged by 50)."""
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventOrder
    from prefect.events.filters import EventResourceFilter as Resource

    wanted = EventFilter(
        occurred=EventOccurredFilter(since=since, until=_soon()),
        event=EventNameFilter(name=list(events.INCIDENT_EVENTS)),
        resource=Resource(id=[events.model_resource_id(model)]),
        order=EventOrder.ASC,
    )
    page = client.read_events(wanted, limit=EVENTS_PAGE)
    found = [*page.events]
    while page.next_page is not None and len(found) < MAX_ATTACHED:
        page = client.read_events_page(str(page.next_page))
        found += page.events
    refs = [AlertRef(str(e.payload.get("incident_key")), str(e.id)) for e in found if e.payload.get("incident_key")]
    return refs[:MAX_ATTACHED]


def _soon() -> datetime:
    return datetime.now(UTC) + timedelta(minutes=1)


@registry_task("reconcile-promotions")
def reconcile_promotions(model: str) -> list[Intent]:
    """Finish what a killed promotion or rollback left half-done; return the changes still to announce."""
    ws = workspace()
    done = reconcile(ws.registry, ws.history(model), model)
    for note in done.notes:
        print(note)
    return done.unannounced


@task(name="describe-unannounced")
def unannounced_events(intents: list[Intent]) -> list[events.Event]:
    """The events of recorded changes that may never have been emitted (ids are deterministic: repeats collapse)."""
    return [announcement_event(intent) for intent in intents]


@store_task("mark-announced")
def mark_announced(model: str, keys: list[str | None]) -> None:
    """Forget the intents whose events were emitted."""
    history = workspace().history(model)
    for key in keys:
        announced(history, key)


@task(name="start-progress")
def start_progress(model: str) -> str:
    """A progress artifact the run moves forward at each step; returns its id."""
    from prefect.artifacts import create_progress_artifact

    artifact = create_progress_artifact(0.0, key=artifact_key("retrain-progress", model), description=model)
    return str(artifact)


@task(name="report-progress")
def report_progress(artifact_id: str, percent: float) -> None:
    """Move the progress artifact to ``percent``."""
    from uuid import UUID

    from prefect.artifacts import update_progress_artifact

    update_progress_artifact(UUID(artifact_id), percent)


@store_task("note-retrain-finished")
def note_retrain_finished(decision: Decision) -> None:
    """Close the incident this retrain answered; a promotion restarts the cooldown."""
    now, promoted = datetime.now(UTC), decision.outcome is Outcome.PROMOTED
    book = workspace().incidents(decision.model)
    book.update(lambda state: (retrain_finished(state, now, decision.outcome.value, promoted), None))


def release_retrain(flow: object, flow_run: FlowRun, state: State) -> None:
    """Flow hook: a failed or crashed retrain is no longer in flight (its incident stays open)."""
    model = str(flow_run.parameters["model"])
    now = datetime.now(UTC)
    workspace().incidents(model).update(lambda book: (retrain_failed(book, now, state.name or "Failed"), None))


@store_task("plan-training-data")
def plan_training_data(model: str, config: ModelConfig) -> DataSplit:
    """Choose the training window and the holdout from the accepted batches."""
    return plan_split(workspace().store(model).manifest(), config)


@store_task("load-frames")
def load_training_frames(model: str, config: ModelConfig, split: DataSplit) -> Frames:
    """Read the split's batches once, only the columns the model uses."""
    return load_frames(workspace().store(model), split, config)


@task(name="train-candidates", cache_policy=NO_CACHE)
def train_candidates(config: ModelConfig, frames: Frames) -> list[TrainedModel]:
    """Fit one LightGBM candidate per training window (widest first), each with early stopping."""
    return [train(window.fit, window.valid, frames.spec, config.lightgbm) for window in frames.windows]


@task(name="choose-window", cache_policy=NO_CACHE)
def choose_challenger(
    config: ModelConfig, frames: Frames, candidates: list[TrainedModel], champion: ChampionScores
) -> ChosenChallenger:
    """Judge every candidate on the holdout against the champion and choose the challenger (see ``cycle.windows``).

    The candidates are the new windows and the earlier champions ``champion`` holds.
    """
    y = label_vector(frames.holdout, frames.spec)
    scored = [
        (window.name, window.rows, trained.predict(frames.holdout))
        for window, trained in zip(frames.windows, candidates, strict=True)
    ]
    choice = choose_window(
        config.task, config.primary_metric, y, scored, champion.predictions, config.promotion, champion.earlier
    )
    print(choice.note)
    earlier = next((e for e in champion.earlier if e.version.version == choice.reinstates), None)
    return ChosenChallenger(frames.windows[choice.best_new], candidates[choice.best_new], choice, earlier)


@registry_task("register-challenger")
def register_challenger(
    model: str,
    config: ModelConfig,
    split: DataSplit,
    frames: Frames,
    chosen: ChosenChallenger,
    trigger: Trigger,
) -> VersionInfo:
    """Log the chosen candidate's MLflow run (params, lineage, trigger), register it and alias it ``challenger``.

    An earlier champion chosen as it is is not registered again: it is aliased ``challenger``.
    """
    registry = workspace().registry
    if chosen.earlier is not None:
        registry.set_alias(model, CHALLENGER, chosen.earlier.version.version)
        return chosen.earlier.version
    older = chosen.window.older
    run_name = f"retrain-{trigger.reason[:40]}"
    params = run_params(config, chosen.window, frames.holdout.height, chosen.trained)
    run_id = registry.start_run(model, run_name, params, lineage_tags(split, trigger, older))
    registry.log_dict(run_id, lineage_json(split, trigger, older), "lineage.json")
    version = registry.register(model, run_id, chosen.trained, frames.holdout.head(5).to_pandas())
    registry.set_alias(model, CHALLENGER, version.version)
    return version


@registry_task("attach-reference")
def attach_reference(config: ModelConfig, chosen: ChosenChallenger, version: VersionInfo) -> None:
    """Store the version's reference sample (its training rows and its predictions) on its MLflow run.

    An earlier champion brought back keeps the reference it was registered with.
    """
    if version.run_id is None or chosen.earlier is not None:
        return
    window = chosen.window
    rows = reference_rows(pl.concat([window.fit, window.valid], how="diagonal_relaxed"), config.drift)
    sample = reference_sample(rows, chosen.trained.spec, chosen.trained.predict(rows))
    store_reference(workspace().registry, version.run_id, sample)


@registry_task("read-champion")
def read_champion(model: str) -> VersionInfo | None:
    """The version currently aliased ``champion`` (the one the challenger is judged against)."""
    return workspace().registry.alias(model, CHAMPION)


@registry_task("score-champion")
def score_champion(config: ModelConfig, split: DataSplit, frames: Frames, model: str) -> ChampionScores:
    """Read ``@champion`` and predict the holdout with it, as served (no predictions when not judging).

    Also names the holdout batches the champion may have trained on (``holdout_batches_seen``), and
    predicts the holdout with the earlier champions that are candidates (``earlier_candidates``).
    """
    ws = workspace()
    registry = ws.registry
    champion = registry.alias(model, CHAMPION)
    if champion is None or config.promotion.mode == "disabled":
        return ChampionScores(champion, None)
    seen = holdout_batches_seen(registry.run_details(champion.run_id)[0], split) if champion.run_id else []
    predictions = predict_holdout(registry, model, champion.version, frames)
    count = config.window.earlier_champions
    earlier, passed_over = earlier_candidates(registry, ws.history(model), champion, split, frames, count)
    return ChampionScores(champion, predictions, seen, earlier, passed_over)


@task(name="judge-challenger", cache_policy=NO_CACHE)
def judge_challenger(
    config: ModelConfig, challenger: VersionInfo, frames: Frames, champion: ChampionScores, choice: WindowChoice
) -> Judgement | None:
    """Score the challenger as served on the champion's holdout rows and apply the policy; ``None`` when disabled.

    The bounds use the confidence corrected for choosing among the candidate windows.
    """
    if config.promotion.mode == "disabled":
        return None
    registry = workspace().registry
    predictions = predict_holdout(registry, challenger.model, challenger.version, frames)
    scores = holdout_scores(frames, predictions, champion.predictions, config.slices)
    judgement = evaluate(config, scores, corrected_policy(config.promotion, len(choice.scores)))
    if challenger.run_id and choice.reinstates is None:  # an earlier champion's run keeps its own figures
        registry.log_metrics(challenger.run_id, holdout_metric_values(judgement))
    return replace(judgement, notes=[choice.note, *champion.notes, *judgement.notes])


@registry_task("refit-challenger")
def refit_challenger(
    model: str,
    config: ModelConfig,
    split: DataSplit,
    frames: Frames,
    chosen: ChosenChallenger,
    challenger: VersionInfo,
    judgement: Judgement | None,
    trigger: Trigger,
) -> Promotable:
    """The version a promotion moves ``@champion`` to: the judged challenger, or its checked refit.

    Only a new challenger the policy promotes is refit (``refit_wanted``); a refit that passes its
    check is registered as a new version naming the judged one (see ``retrainer.cycle.refit``). An
    earlier champion is promoted as it was judged.
    """
    if chosen.earlier is not None:
        return Promotable(challenger, reinstated=True)
    if not refit_wanted(config, judgement):
        return Promotable(challenger)
    refit = refit_recipe(config, frames, chosen, challenger.version)
    print(refit.check.note)
    if not refit.check.passed:
        return Promotable(challenger, refit.check)
    registry, older = workspace().registry, chosen.window.older
    params = {**run_params(config, chosen.window, 0, refit.trained), "train_rows": refit.rows.height, "valid_rows": 0}
    tags = {**lineage_tags(split, trigger, older, refit=True), "retrainer.refit_of": challenger.version}
    run_id = registry.start_run(model, f"refit-v{challenger.version}", params, tags)
    registry.log_dict(run_id, lineage_json(split, trigger, older, refit=True), "lineage.json")
    version = registry.register(model, run_id, refit.trained, frames.holdout.head(5).to_pandas())
    sample = reference_rows(refit.rows, config.drift)
    store_reference(registry, run_id, reference_sample(sample, refit.trained.spec, refit.trained.predict(sample)))
    if challenger.run_id:
        registry.set_run_tags(
            challenger.run_id, {"retrainer.refit_into": version.version, "retrainer.outcome": "Refit"}
        )
        registry.end_run(challenger.run_id)
    return Promotable(version, refit.check)


@registry_task("conclude-decision")
def conclude_decision(
    config: ModelConfig,
    promotable: Promotable,
    champion: VersionInfo | None,
    judgement: Judgement | None,
    trigger: Trigger,
) -> Decision:
    """Promote by compare-and-set if earned; record the decision on the version and in the history.

    The challenger's training run is ended with the outcome, unless it is an earlier champion's
    (finished long ago, it keeps its own).
    """
    ws, challenger = workspace(), promotable.version
    history = ws.history(challenger.model)
    mode, reinstated = config.promotion.mode, promotable.reinstated
    decision = conclude(ws.registry, history, challenger, champion, judgement, mode, trigger, reinstated)
    if challenger.run_id and not reinstated:
        ws.registry.set_run_tags(challenger.run_id, {"retrainer.outcome": decision.outcome.value})
        ws.registry.end_run(challenger.run_id)
    return decision


@task(name="publish-decision", cache_policy=NO_CACHE)
def publish_decision(
    decision: Decision,
    split: DataSplit,
    chosen: ChosenChallenger,
    promotable: Promotable,
    trigger: Trigger,
    labels: LabelCount | None = None,
) -> str:
    """Markdown decision record in the Prefect UI; returns the artifact id.

    For a traffic incident, ``labels`` says how much of the drifted window was labelled.
    """
    version, refit = promotable.version, promotable.refit
    links = {"MLflow run": f"runs:/{version.run_id}", "model version": version.uri}
    if chosen.earlier is not None:
        lineage = split.earlier_lineage(version.version, chosen.earlier.run_tags)
    else:
        lineage = split.lineage(chosen.window.older, refit=refit is not None and refit.passed)
    markdown = decision_markdown(
        decision.message,
        decision.judgement,
        lineage,
        links,
        trigger,
        chosen.choice,
        refit,
        labels.note if labels else None,
    )
    artifact = create_markdown_artifact(
        markdown, key=artifact_key("decision", decision.model), description=decision.message
    )
    return str(artifact)


@task(name="describe-decision")
def decision_event(decision: Decision, trigger: Trigger) -> events.Event:
    """``model.promoted`` for a promotion, ``model.rejected`` for any other outcome."""
    return events.model_decided(
        model=decision.model,
        version=decision.version,
        outcome=decision.outcome.value,
        champion_before=decision.champion_before,
        champion_after=decision.champion_after,
        reasons=decision.reasons,
        trigger=trigger,
    )

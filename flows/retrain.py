"""The retrain flow: train a challenger, judge it against the champion on the same holdout, decide."""

from __future__ import annotations

from typing import Any

from prefect import State, flow
from prefect.states import Completed

from retrainer.cycle.decide import Outcome
from tasks._single_flight import single_flight
from tasks.config import load_model_config
from tasks.emit import emit
from tasks.retrain import (
    attach_reference,
    attached_alerts,
    choose_challenger,
    claim_retrain_slot,
    conclude_decision,
    count_incident_labels,
    decision_event,
    describe_trigger,
    judge_challenger,
    load_training_frames,
    mark_announced,
    note_retrain_finished,
    plan_training_data,
    publish_decision,
    reconcile_promotions,
    refit_challenger,
    register_challenger,
    release_retrain,
    report_progress,
    score_champion,
    start_progress,
    train_candidates,
    unannounced_events,
    wait_for_labels,
)


@flow(name="retrain", log_prints=True, on_failure=[release_retrain], on_crashed=[release_retrain])
def retrain(
    model: str,
    reason: str = "manual",
    event_id: str | None = None,
    incident_key: str | None = None,
    event_name: str | None = None,
    event_payload: dict[str, Any] | None = None,
) -> State:
    """Retrain ``model`` and promote the challenger only if it is really better.

    Ends ``Completed`` named Promoted, Rejected, Superseded, DryRun or Skipped; only faults fail it.
    One retrain per model runs at a time (others wait for the model's concurrency slot); a retrain
    for an event or incident that already had one, or for an outside drift alert within the cooldown,
    ends ``Completed`` named Duplicate. A retrain answering an incident of unlabelled traffic with
    too few labels since it opened ends ``Completed`` named WaitingForLabels (``cycle.labels``).

    Args:
        model: Model name from the config file.
        reason: Why the retrain runs (shown in MLflow, the history and the decision record).
        event_id: Id of the triggering event, when an event started the run.
        incident_key: The drift incident this retrain answers, if any.
        event_name: Name of the triggering event, if any.
        event_payload: Payload of the triggering event (drift evidence), shown in the decision record.
    """
    config = load_model_config(model)
    trigger = describe_trigger(reason, event_id, incident_key, event_name, event_payload)
    with single_flight(model, trigger.flow_run_id):
        unfinished = reconcile_promotions(model)
        emit(unannounced_events(unfinished))
        mark_announced(model, [intent.key for intent in unfinished])
        duplicate = claim_retrain_slot(model, config, trigger)
        if duplicate is not None:
            return Completed(name=Outcome.DUPLICATE.value, message=f"{model}: {duplicate}")
        trigger = attached_alerts(model, trigger)  # the alerts the server coalesced into this run
        labels = count_incident_labels(model, config, trigger)
        if labels is not None and labels.waits:
            wait_for_labels(model, labels)
            return Completed(name=Outcome.WAITING_FOR_LABELS.value, message=f"{model}: {labels.note}")
        progress = start_progress(model)
        split = plan_training_data(model, config)
        frames = load_training_frames(model, config, split)
        # The champion is read and predicts the holdout while the candidates train (on num_threads cores).
        champion = score_champion.submit(config, split, frames, model)
        report_progress(progress, 20)
        candidates = train_candidates(config, frames)
        report_progress(progress, 50)
        judged_against = champion.result()
        chosen = choose_challenger(config, frames, candidates, judged_against)
        challenger = register_challenger(model, config, split, frames, chosen, trigger)
        attach_reference(config, chosen, challenger)
        report_progress(progress, 70)
        judgement = judge_challenger(config, challenger, frames, judged_against, chosen.choice)
        report_progress(progress, 90)
        promotable = refit_challenger(model, config, split, frames, chosen, challenger, judgement, trigger)
        trigger = attached_alerts(model, trigger, whole_window=True)  # and the rest of its coalescing window
        decision = conclude_decision(config, promotable, judged_against.version, judgement, trigger)
        note_retrain_finished(decision)
        publish_decision(decision, split, chosen, promotable, trigger, labels)
        report_progress(progress, 100)
    emit([decision_event(decision, trigger)])
    mark_announced(model, [decision.intent_key])
    return Completed(name=decision.outcome.value, message=decision.message, data=decision.outcome.value)

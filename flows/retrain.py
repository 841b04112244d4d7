"""The retrain flow: train a challenger, judge it against the champion on the same holdout, decide."""

from __future__ import annotations

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.events import emit
from tasks.retrain import (
    attach_reference,
    conclude_decision,
    decision_event,
    describe_trigger,
    judge_challenger,
    load_training_frames,
    note_retrain_finished,
    note_retrain_started,
    plan_training_data,
    publish_decision,
    read_champion,
    register_challenger,
    release_retrain,
    train_challenger,
)


@flow(name="retrain", log_prints=True, on_failure=[release_retrain], on_crashed=[release_retrain])
def retrain(model: str, reason: str = "manual", event_id: str | None = None, incident_key: str | None = None) -> State:
    """Retrain ``model`` and promote the challenger only if it is really better.

    Ends ``Completed`` named Promoted, Rejected, Superseded, DryRun or Skipped; only faults fail it.

    Args:
        model: Model name from the config file.
        reason: Why the retrain runs (shown in MLflow, the history and the decision record).
        event_id: Id of the triggering event, when an event started the run.
        incident_key: The drift incident this retrain answers, if any.
    """
    config = load_model_config(model)
    trigger = describe_trigger(reason, event_id, incident_key)
    note_retrain_started(model, trigger)
    split = plan_training_data(model, config)
    frames = load_training_frames(model, config, split)
    trained = train_challenger(config, frames)
    challenger = register_challenger(model, config, split, frames, trained, trigger)
    attach_reference(config, frames, trained, challenger)
    champion = read_champion(model)
    judgement = judge_challenger(config, challenger, champion, frames)
    decision = conclude_decision(config, challenger, champion, judgement, trigger)
    note_retrain_finished(decision)
    publish_decision(decision, split, challenger)
    emit([decision_event(decision, trigger)])
    return Completed(name=decision.outcome.value, message=decision.message, data=decision.outcome.value)

"""The monitor flow: check the newest batches against the champion's reference; declare incidents."""

from __future__ import annotations

from typing import Literal

from prefect import State, flow
from prefect.states import Completed

from tasks.config import load_model_config
from tasks.emit import emit
from tasks.monitor import (
    assess_incident,
    check_drift,
    choose_window,
    earlier_champions,
    incident_announcements,
    load_reference,
    publish_check,
    record_check,
)
from tasks.retrain import read_champion

WindowKind = Literal["labelled", "inference"]


@flow(name="monitor", log_prints=True)
def monitor(model: str, batch_id: str | None = None, kind: WindowKind = "labelled") -> State:
    """Check ``model``'s newest data for drift against its champion and open an incident when sustained.

    Ends ``Completed`` named Stable, Watching, Cooldown, Attached or Incident (see
    ``retrainer.monitor.incidents``), or NoChampion / NoNewData when there is nothing to compare.

    Args:
        model: Model name from the config file.
        batch_id: Check this accepted batch instead of the configured window.
        kind: ``labelled`` (the labelled batches) or ``inference`` (the unlabelled traffic: drift of
            the features and of the champion's predictions; performance waits for the labels).
    """
    config = load_model_config(model)
    champion = read_champion(model)
    if champion is None:
        return Completed(name="NoChampion", message=f"{model} has no champion to monitor yet")
    window = choose_window(model, config, batch_id, kind)
    if window is None:
        return Completed(name="NoNewData", message=f"{model}: no batch accepted since the last check")
    reference = load_reference(model, config, champion)
    earlier = earlier_champions(model, champion)
    result = check_drift(model, config, champion, reference, window, earlier)
    report_uri = record_check(result)
    assessment = assess_incident(model, config, result.check)
    publish_check(result.check, assessment, report_uri)
    emit(incident_announcements(result.check, assessment, report_uri))
    incident = assessment.incident.key if assessment.incident else None
    summary = result.check.summary(incident=incident, action=assessment.action.value)
    return Completed(name=assessment.action.value, message=f"{model}: {assessment.reason}", data=summary)

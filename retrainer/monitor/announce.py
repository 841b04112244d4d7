"""What a drift check announces: the events a newly opened incident sends to the rest of the system."""

from __future__ import annotations

from retrainer import events
from retrainer.monitor.check import DriftCheck
from retrainer.monitor.incidents import Action, Assessment


def incident_events(check: DriftCheck, assessment: Assessment, report_uri: str) -> list[events.Event]:
    """The events a newly opened incident announces (none for any other action).

    ``drift.detected`` when the dataset drifted, ``performance.degraded`` when labelled performance
    fell beyond tolerance; both keyed by the incident, so repeats collapse.
    """
    incident = assessment.incident
    if assessment.action is not Action.OPENED or incident is None:
        return []
    evidence = events.DriftEvidence(
        check_id=check.check_id,
        drift_share=check.drift_share,
        drift_detected=check.drift_detected,
        top_columns=check.top_drifted(),
        prediction_drift=check.prediction.score if check.prediction else None,
        report_uri=report_uri,
        champion_version=check.champion_version,
        batch_ids=check.batch_ids,
        window_kind=check.window_kind,
    )
    model, key, reason = check.model, incident.key, f"drift incident {incident.key}"
    found = []
    if check.drift_detected:
        found.append(events.drift_detected(model=model, incident_key=key, reason=reason, evidence=evidence))
    if check.performance is not None and check.performance.degraded:
        found.append(
            events.performance_degraded(
                model=model, incident_key=key, reason=reason, evidence=evidence, performance=check.performance
            )
        )
    return found

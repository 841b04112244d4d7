"""Whether a retrain answering an incident of unlabelled traffic has the labels it needs (no Prefect).

An incident opened by checks of inference traffic (``retrainer.monitor.window.Window.kind``) says
the inputs moved, not how the champion does on them: that needs labels. The retrain answering it
trains and judges on the newest labelled data as always, but only once at least
``labels.min_rows_after_incident`` labelled rows arrived since the incident opened (joined late
labels or ingested batches alike). With fewer it ends ``WaitingForLabels`` and the incident stays
open; the join that brings labels (``labels.joined``) starts the retrain again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from retrainer.data.store import Manifest
from retrainer.data.traffic import JOINED
from retrainer.monitor.incidents import IncidentState


@dataclass(frozen=True)
class LabelCount:
    """The labels a retrain of a traffic incident can use.

    Attributes:
        incident_key: The incident.
        window_batches: The inference batches its checks found drifted.
        window_rows: Their rows.
        window_labelled: Rows of those batches whose labels have joined.
        labelled_since: Labelled rows that arrived since the incident opened.
        needed: ``labels.min_rows_after_incident``.
    """

    incident_key: str
    window_batches: list[str]
    window_rows: int
    window_labelled: int
    labelled_since: int
    needed: int

    @property
    def waits(self) -> bool:
        """Too few labelled rows since the incident opened: the retrain waits for labels."""
        return self.labelled_since < self.needed

    @property
    def note(self) -> str:
        """One sentence for the decision record (or the waiting state's message)."""
        share = f"{self.window_labelled / self.window_rows:.0%}" if self.window_rows else "0%"
        said = (
            f"{self.window_labelled:,} of the drifted window's {self.window_rows:,} inference rows are labelled"
            f" ({share}); {self.labelled_since:,} labelled rows arrived since incident {self.incident_key} opened"
        )
        if self.waits:
            return f"{said}, {self.needed:,} needed: waiting for labels"
        return said


def count_labels(
    state: IncidentState, key: str | None, labelled: Manifest, traffic: Manifest, needed: int
) -> LabelCount | None:
    """The labels for the retrain answering incident ``key``; None unless it is an open incident of traffic.

    Args:
        state: The model's incident book.
        key: The incident the retrain answers.
        labelled: The labelled batches' manifest (joined and ingested).
        traffic: The inference batches' manifest.
        needed: ``labels.min_rows_after_incident``.
    """
    incident = state.open
    if key is None or incident is None or incident.key != key or not incident.traffic_batches:
        return None
    window = incident.traffic_batches
    rows = {b.batch_id: b.rows for b in traffic.batches}
    joined = [b.lineage.get("rows_by_inference_batch", {}) for b in labelled.batches if b.origin == JOINED]
    opened = incident.opened_at
    return LabelCount(
        incident_key=key,
        window_batches=window,
        window_rows=sum(rows.get(b, 0) for b in window),
        window_labelled=sum(int(counts.get(b, 0)) for counts in joined for b in window),
        labelled_since=sum(b.rows for b in labelled.batches if _at(b.ingested_at) >= opened),
        needed=needed,
    )


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)

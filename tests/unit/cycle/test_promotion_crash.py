"""Promotion is crash-consistent: a process killed (SIGKILL) at any step of ``conclude`` is repaired.

A real child process promotes v2 over v1 on a real MLflow SQLite registry. The child's registry and
history are product classes with one step boundary made observable (a marker file, then a pause):
the test waits for the marker and kills the child there, then runs the real ``retrainer status``
and a rollback and checks that alias, version tags, history and unannounced events agree.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrainer import events
from retrainer.config import parse_project
from retrainer.cycle.decide import Outcome, announced, announcement_event, conclude
from retrainer.cycle.plan import Trigger
from retrainer.cycle.rollback import rollback
from retrainer.data.contract import schema_for
from retrainer.data.features import FeatureSpec
from retrainer.data.synth import demo_config, make_batch
from retrainer.errors import RollbackError
from retrainer.judge.policy import HoldoutScores, Judgement, judge
from retrainer.model.registry import CHAMPION, VersionInfo
from retrainer.model.training import train
from tests.conftest import Project

CHILD = """
import pickle, sys, time
from pathlib import Path

from retrainer.cycle.decide import conclude
from retrainer.cycle.plan import Trigger
from retrainer.model.history import History
from retrainer.model.registry import Registry
from retrainer.workspace import Workspace

point, marker, inputs = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
version, champion, judgement = pickle.loads(inputs.read_bytes())


def boundary(name):
    if name == point:
        marker.write_text(name)
        time.sleep(600)


class SteppedRegistry(Registry):
    def set_alias(self, model, alias, version):
        super().set_alias(model, alias, version)
        boundary("alias-moved")

    def tag_version(self, model, version, tags):
        if point == "tags-partial":
            super().tag_version(model, version, dict(list(tags.items())[:2]))
            boundary("tags-partial")
        super().tag_version(model, version, tags)
        boundary("tags-written")


class SteppedHistory(History):
    def write_intent(self, intent):
        super().write_intent(intent)
        boundary("intent-" + intent.state)

    def append(self, entry):
        super().append(entry)
        boundary("history-appended")


ws = Workspace.open()
registry = SteppedRegistry(ws.registry.tracking_uri, ws.registry.artifact_root, ws.registry.lock_dir)
history = SteppedHistory(ws.storage.metadata, "churn")
conclude(registry, history, version, champion, judgement, "enforce", Trigger("crash test"))
boundary("done")
"""

# Every boundary of a promotion, in order; "done" is after conclude returned (event not emitted yet).
KILL_POINTS = ["intent-pending", "alias-moved", "tags-partial", "tags-written", "history-appended", "intent-recorded"]


def _two_versions(project: Project, tmp_path: Path) -> Path:
    """v1 promoted as champion, v2 registered and judged better; returns the pickled child inputs."""
    inputs = tmp_path / "inputs.pickle"
    inputs.write_bytes(pickle.dumps(_promoted_pair(project)))
    return inputs


def _promoted_pair(project: Project) -> tuple[VersionInfo, VersionInfo, Judgement]:
    """v1 promoted as champion (and announced), v2 registered; returns v2, v1 and a promoting judgement."""
    config = parse_project(demo_config(), "test").model("churn")
    frame = make_batch(3000, seed=21)
    spec = FeatureSpec.build(config, schema_for(config, frame.columns, None))
    trained = train(frame.head(2700), frame.slice(2700), spec, config.lightgbm)
    ws = project.workspace()
    versions = []
    for name in ("v1", "v2"):
        run_id = ws.registry.start_run("churn", name, {}, {})
        versions.append(ws.registry.register("churn", run_id, trained, frame.head(5).to_pandas()))
    holdout = make_batch(1000, seed=22)
    judgement = judge(
        "binary", "roc_auc", HoldoutScores(holdout["churned"].to_numpy(), trained.predict(holdout)), config.promotion
    )
    first = conclude(ws.registry, ws.history("churn"), versions[0], None, judgement, "enforce", Trigger("first"))
    assert first.outcome is Outcome.PROMOTED
    announced(ws.history("churn"), first.intent_key)  # as the flow does once the event is emitted
    return versions[1], versions[0], judgement


def _kill_at(point: str, inputs: Path, tmp_path: Path) -> None:
    marker = tmp_path / "reached"
    child = subprocess.Popen([sys.executable, "-c", CHILD, point, str(marker), str(inputs)], env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, f"child ended before reaching {point}"
        assert time.monotonic() < deadline, f"child never reached {point}"
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()


def _status(project: Project) -> str:
    retrainer = Path(sys.executable).with_name("retrainer")
    done = subprocess.run([str(retrainer), "status", "--model", "churn"], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("point", KILL_POINTS)
def test_promotion_killed_at_any_step_is_repaired_by_the_next_command(
    project: Project, tmp_path: Path, point: str
) -> None:
    inputs = _two_versions(project, tmp_path)
    _kill_at(point, inputs, tmp_path)

    shown = _status(project)

    ws = project.workspace()
    registry, history = ws.registry, ws.history("churn")
    champion = registry.alias("churn", CHAMPION)
    assert champion is not None
    judged = [e for e in history.entries() if e.version == "2"]
    if point == "intent-pending":  # killed before the alias moved: nothing happened, and the history says so
        assert "repaired:" in shown and "recorded as abandoned" in shown
        assert champion.version == "1"
        assert [e.outcome for e in judged] == ["Abandoned"]
        assert history.intents() == []
        with pytest.raises(RollbackError, match="replaced no earlier champion"):
            rollback(registry, history, "churn", "after crash")
        return
    if point == "history-appended":
        assert "repaired: completed the interrupted churn v2 Promoted (version tags written, history line was" in shown
    elif point != "intent-recorded":
        assert (
            "repaired: completed the interrupted churn v2 Promoted (version tags written, history line written)"
            in shown
        )
    assert champion.version == "2"
    tags = registry.version("churn", "2").tags
    assert tags["retrainer.outcome"] == "Promoted" and tags["retrainer.verdict"] == "promote"
    assert {"retrainer.metrics", "retrainer.trigger", "retrainer.judged_against"} <= set(tags)
    assert [(e.outcome, e.replaced) for e in judged] == [("Promoted", "1")]
    # The promotion is recorded but its event may never have left: it waits for the next flow run.
    [waiting] = history.intents()
    assert waiting.state == "recorded" and announcement_event(waiting).name == events.MODEL_PROMOTED

    done = rollback(registry, history, "churn", "after crash")

    assert (done.from_version, done.to_version) == ("2", "1")
    assert registry.alias("churn", CHAMPION).version == "1"  # type: ignore[union-attr]
    assert [announcement_event(i).name for i in done.unannounced] == [events.MODEL_PROMOTED, events.MODEL_ROLLED_BACK]
    assert history.entries()[-1].outcome == "RolledBack"


def test_an_earlier_champion_brought_back_is_promoted_while_its_old_decision_waits_to_be_announced(
    project: Project,
) -> None:
    second, first, judgement = _promoted_pair(project)
    ws = project.workspace()
    history = ws.history("churn")
    # v2 replaces v1; its event has not left yet (its intent waits), then v1 comes back over v2.
    conclude(ws.registry, history, second, first, judgement, "enforce", Trigger("v2", flow_run_id="run-a"))
    conclude(ws.registry, history, first, second, judgement, "enforce", Trigger("v1", flow_run_id="run-b"))
    later = Trigger("v2 again", flow_run_id="run-c")

    back = conclude(ws.registry, history, second, first, judgement, "enforce", later)

    assert back.outcome is Outcome.PROMOTED
    assert ws.registry.alias("churn", CHAMPION).version == "2"  # type: ignore[union-attr]
    assert [(e.version, e.replaced) for e in history.entries()] == [("1", None), ("2", "1"), ("1", "2"), ("2", "1")]
    # A retried attempt of the same run resumes its own decision instead of deciding twice.
    again = conclude(ws.registry, history, second, first, judgement, "enforce", later)
    assert again.intent_key == back.intent_key and len(history.entries()) == 4

"""Refitting the judged recipe on its window plus the holdout, and the check the refit must pass.

The judged challenger never saw the holdout, which is the newest data. Once its judgement says
promote, the same recipe (the chosen window, the parameters and the judged best iteration) is
refit on the window plus the holdout, so the served model also learns from the newest rows. The
refit itself is not judged on unseen rows, since none are left. The decision record says so and
keeps the judged version's figures. The refit is promoted only if it passes a sanity check: on the
holdout rows, which it trained on, its primary metric must be at least the judged challenger's
there, which it never saw. A refit that cannot fit rows it was given is broken, and then the judged
challenger is promoted instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from retrainer.config import ModelConfig
from retrainer.config.metrics import TaskKind, orientation
from retrainer.cycle.plan import Frames
from retrainer.cycle.windows import ChosenChallenger
from retrainer.data.features import label_vector
from retrainer.judge.metrics import point_metric
from retrainer.judge.policy import Judgement
from retrainer.model.registry import VersionInfo
from retrainer.model.training import TrainedModel, refit


@dataclass(frozen=True)
class RefitCheck:
    """How the refit compares with the judged challenger on the holdout rows.

    Attributes:
        judged_version: The version that was judged (on rows it never saw).
        rows: Training rows of the refit (the window plus the holdout).
        judged: The judged challenger's primary metric on the holdout (unseen rows).
        refit: The refit's primary metric on the same rows (seen: it trained on them).
        agreement: Share of holdout rows on which both predict the same class (regression: the
            correlation of their predictions).
        passed: Whether the refit is promoted in place of the judged challenger.
    """

    judged_version: str
    rows: int
    judged: float
    refit: float
    agreement: float
    passed: bool

    @property
    def note(self) -> str:
        """One sentence for the decision record."""
        figures = f"{self.refit:.4f} on the holdout it trained on vs {self.judged:.4f} judged unseen"
        if not self.passed:
            return (
                f"refit on {self.rows} rows failed its check ({figures}): the judged v{self.judged_version} is promoted"
            )
        return (
            f"promoted: the judged recipe (v{self.judged_version}) refit on its window plus the holdout, {self.rows}"
            f" rows; checked on the holdout: {figures}, agreement {self.agreement:.1%}. The figures above are"
            f" v{self.judged_version}'s, on rows it never saw"
        )


@dataclass(frozen=True)
class Refit:
    """The refit model, the rows it trained on and its check."""

    trained: TrainedModel
    rows: pl.DataFrame
    check: RefitCheck


@dataclass(frozen=True)
class Promotable:
    """The version a promotion moves ``@champion`` to (the judged challenger or its refit), and the refit's check.

    ``reinstated`` marks an earlier champion brought back as it is: its own training run is finished
    and keeps its tags.
    """

    version: VersionInfo
    refit: RefitCheck | None = None
    reinstated: bool = False


def refit_wanted(config: ModelConfig, judgement: Judgement | None) -> bool:
    """Whether the judged challenger is refit: the policy promotes it, enforced, with ``promotion.refit`` on."""
    promoting = judgement is not None and judgement.verdict == "promote"
    return promoting and config.promotion.mode == "enforce" and config.promotion.refit


def refit_recipe(config: ModelConfig, frames: Frames, chosen: ChosenChallenger, judged_version: str) -> Refit:
    """Refit the chosen window's recipe on the window plus the holdout for the judged best iteration, and check it."""
    rows = pl.concat([chosen.window.fit, chosen.window.valid, frames.holdout], how="diagonal_relaxed")
    trained = refit(rows, frames.spec, config.lightgbm, chosen.trained.best_iteration)
    y = label_vector(frames.holdout, frames.spec)
    judged, again = chosen.trained.predict(frames.holdout), trained.predict(frames.holdout)
    check = check_refit(config.task, config.primary_metric, y, judged, again, judged_version, rows.height)
    return Refit(trained, rows, check)


def check_refit(
    task: TaskKind,
    primary: str,
    y: np.ndarray,
    judged: np.ndarray,
    refit: np.ndarray,
    judged_version: str,
    rows: int,
) -> RefitCheck:
    """Compare the refit's and the judged challenger's holdout predictions; see the module docstring."""
    judged_value = point_metric(task, primary, y, judged)
    refit_value = point_metric(task, primary, y, refit)
    finite = bool(np.isfinite(refit).all()) and np.isfinite(refit_value)
    passed = finite and orientation(primary) * (refit_value - judged_value) >= 0
    return RefitCheck(judged_version, rows, judged_value, refit_value, _agreement(task, judged, refit), passed)


def _agreement(task: TaskKind, judged: np.ndarray, refit: np.ndarray) -> float:
    if task == "regression":
        if judged.size < 2 or np.std(judged) == 0 or np.std(refit) == 0:
            return float("nan")
        return float(np.corrcoef(judged, refit)[0, 1])
    if task == "multiclass":
        return float(np.mean(np.argmax(judged, axis=1) == np.argmax(refit, axis=1)))
    return float(np.mean((judged >= 0.5) == (refit >= 0.5)))

"""The Evidently adapter reaches Evidently's legacy stattest registry: held to the pinned version here.

``retrainer.monitor.evidently`` maps the display names in a snapshot back to method names through
``evidently.legacy.calculations.stattests`` and catches that registry's errors; neither is public API.
"""

from __future__ import annotations

from importlib.metadata import version

from retrainer.config.drift_methods import METHODS_BY_KIND
from retrainer.monitor.evidently import _method_names


def test_the_internals_reached_are_those_of_the_pinned_evidently() -> None:
    assert version("evidently") == "0.7.23", "new Evidently: check the legacy internals evidently.py reaches"


def test_every_configurable_method_has_a_display_name_the_adapter_reads_back() -> None:
    names = _method_names()
    configurable = set().union(*METHODS_BY_KIND.values())
    assert configurable <= set(names.values())

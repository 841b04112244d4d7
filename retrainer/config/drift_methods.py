"""Names of Evidently's drift methods: the column kinds each applies to, and how its score reads.

Kept apart from Evidently (whose import takes seconds) so that configuration can be validated and
columns ranked without it; a test holds these sets equal to Evidently's own registry.
"""

from __future__ import annotations

from typing import Literal

ColumnKind = Literal["numerical", "categorical"]

METHODS_BY_KIND: dict[ColumnKind, frozenset[str]] = {
    "numerical": frozenset(
        {"anderson", "cramer_von_mises", "ed", "empirical_mmd", "es", "hellinger", "jensenshannon", "kl_div"}
        | {"ks", "mannw", "psi", "t_test", "wasserstein"}
    ),
    "categorical": frozenset(
        {"chisquare", "fisher_exact", "g_test", "hellinger", "jensenshannon", "kl_div", "psi", "TVD", "z"}
    ),
}

# Methods whose score is a p-value, so that a *small* score means drift; the others are distances
# or divergences, where a large one does.
P_VALUE_METHODS = frozenset(
    {"anderson", "chisquare", "cramer_von_mises", "empirical_mmd", "es", "fisher_exact", "g_test", "ks", "mannw"}
    | {"t_test", "TVD", "z"}
)


def method_problem(method: str, kind: ColumnKind) -> str | None:
    """Why ``method`` cannot judge a ``kind`` column, or ``None`` when it can."""
    if method in METHODS_BY_KIND[kind]:
        return None
    if any(method in names for names in METHODS_BY_KIND.values()):
        return f"drift method {method!r} does not apply to {kind} columns"
    known = sorted(set().union(*METHODS_BY_KIND.values()), key=str.lower)
    return f"unknown drift method {method!r} (known: {', '.join(known)})"

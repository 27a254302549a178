"""Which anomaly maps a model sums, read from its config alone (no weights, no torch): for the
app, which shows them, and for scoring (core.inspect.score)."""

from __future__ import annotations


def summed_maps(config: dict) -> tuple[list[str], list[str]]:
    """From a model's config alone: (the maps its heat map sums, the maps its image score sums);
    see Inspector.maps_in_use and Inspector.score_maps."""
    m = config.get("map") or {}
    available = ["own"] + [name for name, there in (
        ("features", bool(m.get("features"))), ("context", bool(config.get("context"))),
        ("context_features", bool(m.get("context_features")))) if there]
    use = list(m.get("use") or available)
    left_out = set(m.get("score_leaves_out") or ())
    return use, [n for n in use if n not in left_out] or use

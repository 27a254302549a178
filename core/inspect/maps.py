"""Which anomaly maps a model sums, read from its config alone (no weights, no torch): for the
app, which shows them, and for scoring (core.inspect.score); and how a choice of them reads."""

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


def unsure_choice_note(higher_not_kept: dict | None, describe=" + ".join) -> str:
    """A sentence for a choice of maps that left out a higher-scoring subset (see
    mapchoice.higher_not_kept); "" for none. describe: map names -> text."""
    if not higher_not_kept:
        return ""
    return (f"{describe(higher_not_kept['maps'])} scored higher on these images but beat all the maps in only "
            f"{higher_not_kept['beats_all_maps']:.0%} of resamples (needs {higher_not_kept['needs']:.0%}): "
            "label more images to choose it surely.")

"""Which anomaly maps a model sums, read from its config alone (no weights, no torch): for the
app, which shows them, and for scoring (core.inspect.score); how a choice of them reads; and which
maps suit a type of part, for training."""

from __future__ import annotations

# What the operator knows about the product, as the maps that rank it best (bench/README.md, sessions
# 7-28). On parts that show the same layout every time (circuit boards, printed labels) the VAE's own
# map ranks images best (0.89-0.95 image AUROC on deeppcb) and the feature and context maps sit at
# chance there and only add false peaks; leaving them out also gives the VAE all of a time budget
# (2.2-2.7x the steps; deeppcb in 10 minutes on 2 CPU cores, five seeds: 0.914-0.955 image AUROC,
# where the four maps gave 0.840-0.924). On textures with no fixed layout (tiles, fabric, castings)
# the Gaussians of both networks' features carry the ranking and the VAE's own map dilutes them
# (magnetic_tile: the two feature maps 0.929, the own map 0.794, all three summed 0.894; labelled
# images chose the two feature maps and the context map; trained so, 0.928-0.941 against 0.894-0.913).
# There the context segmenter is what localises large faint regions, and with twice its steps per
# VAE step its map and the heat map improved (magnetic_tile, 10 CPU minutes, three seeds: pixel
# AUROC 0.789-0.804 -> 0.804-0.829, image AUROC 0.914-0.941 -> 0.930-0.941; bench/README.md, session 29).
# The context map outlines those regions where the feature maps mark only patches of them, so a
# textured heat map weighs it 2 (magnetic_tile, 10 minutes, seeds 0 and 1: pixel AUROC 0.848 -> 0.864,
# 0.823 -> 0.838; 3 adds at most 0.004 more but blurs thin breaks and cracks twice as much;
# bench/README.md, session 31). The image score does not use the context map. Its map kept gaining
# from steps well past four per VAE step, though the VAE then makes a third of the steps (magnetic_tile,
# 10 minutes, seed 0: 4, 8, 16, 32 steps -> pixel AUROC 0.864, 0.871, 0.882, 0.881, image AUROC
# 0.946-0.953; seeds 1 and 3, 4, 8, 16 steps: 0.838, 0.855, 0.869 and 0.850, 0.867, 0.872;
# bench/README.md, session 32).
# With sixteen steps the context map outlines regions so well that the VAE features' map, which marks
# a tile's whole texture a little and its defects only in patches, costs the heat map more than it
# adds: weighed a half there (the image score keeps it whole), the pixel AUROC rose on all seven
# models measured (magnetic_tile, 10 minutes: mean 0.880 -> 0.886); left out, a little more (0.887),
# but thin cracks lost twice as much of their own pixel AUROC (0.90 -> 0.85 against 0.88;
# bench/README.md, session 33).
# Its context map is the mean of the segmenter's look at the image and at its three mirror images
# (where training flips the parts, as it does by default): offline on eight saved models the heat
# map's pixel AUROC rose on every one (mean 0.878 -> 0.889); 10-minute runs, seeds 0, 3, 1: 0.890,
# 0.877, 0.871 -> 0.901, 0.891, 0.877 (bench/README.md, session 34). The mirror images cost three
# more passes of the segmenter for each heat map; scores alone do not need them.
# Its looks are averaged as logits, not probabilities: offline on six 10-minute models (seeds 0-4, and
# seed 1 with another segmenter) the heat map's pixel AUROC rose on every one, by 0.008-0.015 (mean
# 0.897 -> 0.909), uneven bands, fray and blowholes gaining on every model; thin cracks lost 0.01-0.04
# of their own (bench/README.md, session 35).
# "general" sums the VAE's map and features for the score, and the context map too for the heat map.
PART_TYPES = {  # training parameters each sets
    "general": {},
    "patterned": {"context": False, "feature_stats": False},
    "textured": {"context": True, "feature_stats": True, "context_features": True, "context_steps": 16,
                 "context_flips": True, "context_logits": True, "heat_weights": {"context": 2.0, "features": 0.5},
                 "maps": ["features", "context", "context_features"]},
}
MAP_NAMES = ("own", "features", "context", "context_features")  # every map a model can have, in order
PART_TYPE_TEXT = {  # for the app and the command line's help
    "general": "most parts",
    "patterned": "the same layout on every part (circuit boards, labels, printed parts)",
    "textured": "a surface with no fixed layout (tiles, fabric, castings, wood)",
}


def summed_maps(config: dict) -> tuple[list[str], list[str]]:
    """From a model's config alone: (the maps its heat map sums, the maps its image score sums);
    see Inspector.maps_in_use and Inspector.score_maps."""
    m = config.get("map") or {}
    use = list(m.get("use") or available_maps(config))
    left_out = set(m.get("score_leaves_out") or ())
    return use, [n for n in use if n not in left_out] or use


def heat_weights(config: dict, maps) -> dict[str, float]:
    """From a model's config alone: the weight of each of `maps` in their heat map's sum
    (map.heat_weights, 1 where unset; all 1 for a single map, whose scale the heat map's fit to
    the score sets anyway)."""
    given = (config.get("map") or {}).get("heat_weights") or {}
    maps = list(maps)
    return {n: float(given.get(n, 1.0)) if len(maps) > 1 else 1.0 for n in maps}


def heat_is_score(config: dict) -> bool:
    """From a model's config alone: whether its image score is the maximum of its heat map itself
    (the same maps, each weighed 1), so that no fit of one to the other is needed."""
    use, scored = summed_maps(config)
    return len(scored) == len(use) and set(heat_weights(config, use).values()) == {1.0}


def available_maps(config: dict) -> list[str]:
    """From a model's config alone: every map it has (Inspector.available_maps), the ones a choice
    from labelled images picks among."""
    m = config.get("map") or {}
    return ["own"] + [name for name, there in (
        ("features", bool(m.get("features"))), ("context", bool(config.get("context"))),
        ("context_features", bool(m.get("context_features")))) if there]


def unsure_choice_note(higher_not_kept: dict | None, describe=" + ".join) -> str:
    """A sentence for a choice of maps that left out a higher-scoring subset (see
    mapchoice.higher_not_kept); "" for none. describe: map names -> text."""
    if not higher_not_kept:
        return ""
    return (f"{describe(higher_not_kept['maps'])} scored higher on these images but beat all the maps in only "
            f"{higher_not_kept['beats_all_maps']:.0%} of resamples (needs {higher_not_kept['needs']:.0%}): "
            "label more images to choose it surely.")

"""Generation settings (sampling controls, stop strings, seed) and named presets."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields

from core.errors import AppError


@dataclass
class GenerationSettings:
    max_new_tokens: int = 120
    temperature: float = 0.8  # 0 means greedy (always the most likely token)
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    seed: int | None = None  # None: a fresh seed is drawn and recorded
    stop: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict | None) -> "GenerationSettings":
        data = dict(data or {})
        preset = data.pop("preset", None)
        if preset and preset not in PRESETS:
            raise AppError(f"Unknown preset '{preset}'.", f"Use one of: {', '.join(PRESETS)}.")
        base = asdict(PRESETS[preset]) if preset else {}
        names = {f.name for f in fields(cls)}
        base.update({k: v for k, v in data.items() if k in names and v is not None})
        settings = cls(**base)
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (isinstance(self.max_new_tokens, int) and 1 <= self.max_new_tokens <= 32768,
             "max new tokens must be between 1 and 32768"),
            (0 <= float(self.temperature) <= 5, "temperature must be between 0 and 5"),
            (0 < float(self.top_p) <= 1, "top-p must be above 0 and at most 1"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top-k must be 0 (off) or a positive whole number"),
            (0.5 <= float(self.repetition_penalty) <= 3, "repetition penalty must be between 0.5 and 3"),
            (self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**63),
             "the seed must be a whole number ≥ 0"),
            (all(isinstance(s, str) for s in self.stop), "stop strings must be text"),
        ]
        for ok, message in checks:
            if not ok:
                raise AppError(f"Invalid generation setting: {message}.", "Change the value in the generation controls.")
        self.stop = [s for s in self.stop if s]

    def with_seed(self) -> "GenerationSettings":
        """A copy with a concrete seed, so the run can be recorded and repeated."""
        data = asdict(self)
        if data["seed"] is None:
            data["seed"] = random.SystemRandom().randrange(2**31)
        return GenerationSettings(**data)

    @property
    def greedy(self) -> bool:
        return float(self.temperature) == 0.0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, GenerationSettings] = {
    # Factual prose and rewrites: stay close to the most likely words.
    "precise": GenerationSettings(temperature=0.3, top_p=0.9, top_k=40, repetition_penalty=1.15),
    "balanced": GenerationSettings(),
    # Fiction and brainstorming: more surprising word choices.
    "creative": GenerationSettings(temperature=1.1, top_p=0.98, top_k=0, repetition_penalty=1.05,
                                   max_new_tokens=200),
    # Same input, same output, without a seed: greedy decoding.
    "deterministic": GenerationSettings(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0),
}

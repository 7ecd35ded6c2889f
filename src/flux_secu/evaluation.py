"""Detection quality against ground truth: the evaluation manifest, incident matching and metrics.

Pure (no Ray): ``flux-secu evaluate --manifest`` replays each entry through the real pipeline and hands
the incidents it raised to :func:`score_clip`; :func:`summarise` adds the clips up.

Scoring rules, in clip seconds:

- an incident *matches* an expected presence of the same kind when its ``clip_time_s`` (the clip time
  of the frame that raised it) lies in ``[start_s, end_s + tolerance_s]``: the pipeline cannot raise
  before the person is there, and may confirm a little after the annotated end (the confirmation
  needs several frames, the annotation is approximate);
- a presence is matched by at most one incident and an incident matches at most one presence: a
  second incident for the same presence (the presence was split) is a false positive;
- incidents that match nothing are false positives, presences that nothing matched are misses;
- alert latency of a match = incident ``clip_time_s`` - presence ``start_s``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from flux_secu.config import Config, ConfigError, describe_validation_error, read_yaml
from flux_secu.rules.incident import IncidentKind

DEFAULT_TOLERANCE_S = 1.0
"""How long after a presence's annotated end an incident still counts for it (one confirmation
window at 5 detect fps is 1 s)."""


class ManifestError(ConfigError):
    """A manifest that cannot be used; ``str()`` is one line naming the field and the reason."""


class _Strict(BaseModel):
    # Unknown fields are errors: a misspelt `tolerance_s` must not silently score with the default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Presence(_Strict):
    """Someone (or something) the pipeline should raise an incident for, in clip seconds."""

    kind: IncidentKind = IncidentKind.INTRUSION
    start_s: float = Field(ge=0)
    """First moment of the presence (the latency is counted from here)."""
    end_s: float = Field(ge=0)
    """Last moment of the presence (inclusive)."""

    @model_validator(mode="after")
    def _ordered(self) -> Presence:
        if self.end_s < self.start_s:
            raise ValueError("end_s must not be before start_s")
        return self


class ManifestEntry(_Strict):
    """One replay: CLIP played as CAMERA with the pipeline clock starting at AT."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=120)] | None = None
    """Label of the entry in the output; ``<clip file name>@<at>`` when left out."""
    clip: Path
    """Video file, relative to the manifest."""
    camera: str
    """Camera of the config whose site, calendar, zones and settings apply."""
    at: AwareDatetime
    """Pipeline clock at the clip's first frame: ISO 8601 with its UTC offset (the night it plays)."""
    expected: list[Presence] = []
    """Every presence that should raise an incident; none: any incident is a false positive."""
    tolerance_s: float = Field(DEFAULT_TOLERANCE_S, ge=0, le=60)

    @field_validator("clip")
    @classmethod
    def _clip_exists(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base_dir")
        path = value if value.is_absolute() or base is None else Path(base) / value
        path = Path(path.resolve())
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        return path

    @property
    def label(self) -> str:
        return self.name or f"{self.clip.name}@{self.at.isoformat()}"


class Manifest(_Strict):
    entries: list[ManifestEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_labels(self) -> Manifest:
        # Output lines are told apart by the label: two entries with one label could not be read back.
        seen: set[str] = set()
        for i, entry in enumerate(self.entries):
            if entry.label in seen:
                raise ValueError(f"entries[{i}]: another entry is also called {entry.label!r} "
                                 f"(give each entry a distinct name)")
            seen.add(entry.label)
        return self


def parse_manifest(data: Any, base_dir: Path) -> Manifest:
    """Validate an already-parsed YAML document; clip paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise ManifestError("(top level): expected a mapping with 'entries'")
    try:
        return Manifest.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ManifestError(describe_validation_error(exc)) from None


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises :class:`ManifestError` with a one-line message."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None
    return parse_manifest(data, path.resolve().parent)


def check_cameras(manifest: Manifest, config: Config) -> None:
    """Every entry names a camera of ``config``; else :class:`ManifestError` naming the first one."""
    for i, entry in enumerate(manifest.entries):
        try:
            config.camera(entry.camera)
        except KeyError as exc:
            raise ManifestError(f"entries[{i}].camera: {exc.args[0]}") from None


# --- matching and metrics ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Raised:
    """What scoring needs of an incident the pipeline raised."""

    clip_time_s: float
    kind: str = IncidentKind.INTRUSION.value


@dataclass(frozen=True, slots=True)
class Match:
    presence: Presence
    clip_time_s: float

    @property
    def latency_s(self) -> float:
        return self.clip_time_s - self.presence.start_s


@dataclass(frozen=True)
class ClipScore:
    """The outcome of one entry."""

    presences: int
    matches: list[Match] = field(default_factory=list)
    false_positives: list[Raised] = field(default_factory=list)
    misses: list[Presence] = field(default_factory=list)

    @property
    def incidents(self) -> int:
        return len(self.matches) + len(self.false_positives)

    @property
    def latencies_s(self) -> list[float]:
        return [m.latency_s for m in self.matches]


def score_clip(expected: Sequence[Presence], raised: Iterable[Raised], tolerance_s: float) -> ClipScore:
    """Match incidents to presences, one to one (see the module docstring for the rules).

    Incidents are taken in clip-time order and each goes to the open presence (same kind, window holding
    the incident) whose window closes first: for points against intervals this greedy choice finds the
    largest matching, so a tolerance that makes windows overlap never costs a presence that a different
    assignment would have matched. The match kept for a presence is its earliest incident.
    """
    unmatched = list(range(len(expected)))
    matches: list[tuple[int, Match]] = []
    false_positives: list[Raised] = []
    for incident in sorted(raised, key=lambda r: r.clip_time_s):
        candidates = [
            i for i in unmatched
            if expected[i].kind == incident.kind
            and expected[i].start_s <= incident.clip_time_s <= expected[i].end_s + tolerance_s
        ]
        if not candidates:
            false_positives.append(incident)
            continue
        best = min(candidates, key=lambda i: (expected[i].end_s, expected[i].start_s))
        unmatched.remove(best)
        matches.append((best, Match(expected[best], incident.clip_time_s)))
    return ClipScore(
        presences=len(expected),
        matches=[m for _, m in sorted(matches, key=lambda im: im[0])],
        false_positives=false_positives,
        misses=[expected[i] for i in unmatched],
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile with linear interpolation between ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ratio(num: int, den: int) -> float | None:
    # 0/0 is "nothing to measure", not 0 or 1: a clip that should raise nothing and raised nothing has
    # no precision; it still weighs in the overall figures through its (zero) false positives.
    return None if den == 0 else round(num / den, 4)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def metrics(scores: Sequence[ClipScore]) -> dict[str, Any]:
    """Precision, recall and alert latency (p50/p95, s) over ``scores`` taken together, with the counts."""
    matched = sum(len(s.matches) for s in scores)
    incidents = sum(s.incidents for s in scores)
    presences = sum(s.presences for s in scores)
    latencies = [lat for s in scores for lat in s.latencies_s]
    return {
        "precision": _ratio(matched, incidents),
        "recall": _ratio(matched, presences),
        "latency_p50_s": _seconds(percentile(latencies, 50)),
        "latency_p95_s": _seconds(percentile(latencies, 95)),
        "presences": presences,
        "incidents": incidents,
        "matched": matched,
        "false_positives": incidents - matched,
        "misses": presences - matched,
    }


def clip_details(score: ClipScore) -> dict[str, Any]:
    """The evidence behind one clip's figures: each latency, when false positives came, what was missed."""
    return {
        "latencies_s": [_seconds(lat) for lat in score.latencies_s],
        "false_positive_times_s": [fp.clip_time_s for fp in score.false_positives],
        "missed": [[p.start_s, p.end_s] for p in score.misses],
    }


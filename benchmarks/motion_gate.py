"""How many frames does the motion gate send to the detector while the room is empty vs occupied?

The shipped one-by-one clip (fixed indoor camera, 10 fps, 139 s: an empty room, then six people one at a
time) is sampled to 5 detect fps as a camera would be, and each sampled frame goes through the gate with
its default settings (``MotionConfig()``). The presences are the clip's ground truth (shared assets'
README, in frames). Reported: frames sent / sampled while empty (``quiet``: at least ``SETTLE_S`` after
the last presence ended) and while occupied, and per presence the
delay from its first frame to the first frame sent and the longest stretch with nothing sent: a presence
is missed when nothing is sent while it lasts.

Run: .venv/bin/python benchmarks/motion_gate.py [--clip FILE]  (~2 s; writes results/motion_gate.json,
the last line is the same JSON object)
"""

from __future__ import annotations

import argparse
import json
from itertools import pairwise
from pathlib import Path
from typing import Any

import cv2

from flux_secu.config import MotionConfig
from flux_secu.video.motion import MotionGate
from flux_secu.video.sampling import FrameSampler

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets"
CLIP = ASSETS / "videos" / "one-by-one-person-detection.mp4"
# Person present in these frames (inclusive), from the shared assets' README.
PRESENCES = ((63, 191), (228, 443), (506, 694), (745, 865), (932, 1194), (1237, 1358))
DETECT_FPS = 5.0
SETTLE_S = 5.0
"""An empty frame this long after the last presence ended is "quiet": the departed person's trace has
faded from the gate's running average (at its adaptation rate this takes a few seconds), as it would
in the long empty stretches of a night."""


def measure(clip: Path = CLIP, config: MotionConfig | None = None,
            presences: tuple[tuple[int, int], ...] = PRESENCES) -> dict[str, Any]:
    cap = cv2.VideoCapture(str(clip))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    sampler, gate = FrameSampler(DETECT_FPS), MotionGate(config or MotionConfig())
    sent: list[int] = []
    sampled: list[int] = []
    index = 0
    while cap.grab():
        if sampler.take(index / fps):
            ok, frame = cap.retrieve()
            assert ok
            sampled.append(index)
            if gate.check(frame, index / fps).analyse:
                sent.append(index)
        index += 1
    cap.release()

    def occupied(i: int) -> bool:
        return any(a <= i <= b for a, b in presences)

    per_presence = []
    for first, last in presences:
        inside = [i for i in sent if first <= i <= last]
        edges = [first, *inside, last]
        per_presence.append({
            "frames": [first, last],
            "sent": len(inside),
            "sampled": sum(first <= i <= last for i in sampled),
            "first_sent_after_s": round((inside[0] - first) / fps, 2) if inside else None,
            "longest_gap_s": round(max(b - a for a, b in pairwise(edges)) / fps, 2),
        })
    def quiet(i: int) -> bool:
        return not occupied(i) and all(i > b + SETTLE_S * fps or i < a for a, b in presences)

    quiet_sampled = sum(quiet(i) for i in sampled)
    quiet_sent = sum(quiet(i) for i in sent)
    empty_sampled = sum(not occupied(i) for i in sampled)
    occupied_sampled = len(sampled) - empty_sampled
    empty_sent = sum(not occupied(i) for i in sent)
    occupied_sent = len(sent) - empty_sent
    return {
        "frames": index, "sampled": len(sampled), "sent": len(sent),
        "empty_sent": empty_sent, "empty_sampled": empty_sampled,
        "empty_ratio": round(empty_sent / max(1, empty_sampled), 3),
        "quiet_sent": quiet_sent, "quiet_sampled": quiet_sampled,
        "occupied_sent": occupied_sent, "occupied_sampled": occupied_sampled,
        "occupied_ratio": round(occupied_sent / max(1, occupied_sampled), 3),
        "missed_presences": sum(p["sent"] == 0 for p in per_presence),
        "presences": per_presence,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    result = measure(args.clip)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "motion_gate.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

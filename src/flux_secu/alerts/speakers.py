"""Speaker drivers: how a warning reaches a site's loudspeakers.

Only the ``file`` driver exists in this version: it records each play as a WAV file plus a line of
``plays.jsonl`` under the var directory, for demos and tests.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Play:
    speaker: str
    incident_id: str
    wav: Path
    repeat: int
    command_ts: float


class SpeakerDriver(Protocol):
    def play(self, incident_id: str, wav: Path, repeat: int) -> Play: ...


class FileSpeakerDriver:
    def __init__(self, speaker_id: str, out_dir: Path) -> None:
        self.speaker_id = speaker_id
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)

    def play(self, incident_id: str, wav: Path, repeat: int) -> Play:
        command_ts = time.time()
        target = self.out_dir / f"{incident_id}.wav"
        shutil.copyfile(wav, target)
        play = Play(self.speaker_id, incident_id, target, repeat, command_ts)
        with (self.out_dir / "plays.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps({"incident": incident_id, "wav": str(target), "repeat": repeat,
                                  "command_ts": command_ts}) + "\n")
        return play

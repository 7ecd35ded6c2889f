"""An inference actor whose model call hangs on demand, for the hung-detector tests.

The model is real (the shipped YOLOX-Nano in a real ONNX Runtime session, in a real Ray actor); what
hangs is the call: ``infer`` blocks in a real sleep loop, holding the actor's only thread, for as long
as a flag file exists beside the model file: ``hang-<actor id>`` for one actor, ``hang-all`` for
every one. That is how a wedged GPU or a model call that never returns looks from the pool: a call
that does not answer and an actor that does nothing else meanwhile. A model graph cannot block on a
file, and an ONNX op that loops for ever would hang every actor its frames reach, not the one chosen.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle

from flux_secu.actors.inference import InferenceWorker
from flux_secu.config import ModelConfig

# The pool's process unpickles this class: by value, so that it need not import the tests package.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class HangingWorker(InferenceWorker):
    def __init__(self, model: ModelConfig) -> None:
        super().__init__(model)
        self.flags = Path(model.path).parent
        self.actor_id = ray.get_runtime_context().get_actor_id()

    def infer(self, frames: list[Any]) -> Any:
        while (self.flags / f"hang-{self.actor_id}").exists() or (self.flags / "hang-all").exists():
            time.sleep(0.05)
        return super().infer(frames)


def hang(flags: Path, actor: Any = None) -> Path:
    """Make ``actor``'s calls (every actor's with None) hang until the returned flag is removed."""
    flag = flags / ("hang-all" if actor is None else f"hang-{actor._actor_id.hex()}")
    flag.touch()
    return flag

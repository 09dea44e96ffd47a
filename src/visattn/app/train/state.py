"""What a run keeps on disk and in memory besides the model: the run folder (one owner at a time, never reused
by accident), RNG states, and the checkpoint written by :func:`visattn.checkpoint.save_checkpoint`."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
from pathlib import Path

import torch

RUN_FILES = ("checkpoint.pt", "metrics.jsonl", "steps.jsonl")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunFolder:
    """The output folder of one run, held under an exclusive lock (``.lock``) while the run owns it.

    A folder that holds a run (a checkpoint or metrics) is refused unless the run is resumed or ``overwrite``
    discards it. A folder this run created is removed again if the run fails before writing anything.
    """

    def __init__(self, path, resume: bool, overwrite: bool):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--output {self.path} is a file; name a folder")
        self.created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "w")  # noqa: SIM115  (held for the run's lifetime)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"{self.path} is in use by another visattn train run; wait for it or choose another "
                             f"--output") from None
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        existing = [f for f in RUN_FILES if (self.path / f).exists()]
        if existing and not resume and not overwrite:
            self.release()
            raise ValueError(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                             f"--overwrite to discard it, or choose another --output")
        if overwrite:
            for f in existing:
                (self.path / f).unlink()

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def release(self, failed: bool = False) -> None:
        if self._lock.closed:
            return
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()
        (self.path / ".lock").unlink(missing_ok=True)
        if failed and self.created and not any(self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)

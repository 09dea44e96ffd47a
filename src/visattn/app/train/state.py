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
    discards it. Discarding is deferred: the old files are moved into ``.overwritten/`` and deleted only once the
    new run has written its first checkpoint (:meth:`commit`); a run that fails before that puts them back. A folder
    this run created is removed again if the run fails before writing anything. The ``.lock`` file is never
    truncated by a refused attempt nor unlinked (unlinking a lock file others may have opened races with them).
    """

    ASIDE = ".overwritten"

    def __init__(self, path, resume: bool, overwrite: bool):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--output {self.path} is a file; name a folder")
        self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create --output {self.path}: {err.strerror or err}") from None
        self._lock = open(self.path / ".lock", "a+")  # noqa: SIM115  (held for the run's lifetime; never truncated)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ValueError(f"{self.path} is in use by another visattn train run; wait for it or choose another "
                             f"--output") from None
        self._lock.truncate(0)  # ours now: record the owner
        self._lock.write(f"{os.getpid()}\n")
        self._lock.flush()
        for stale in self.path.glob(".checkpoint.pt.tmp-*"):  # left by a writer killed mid-write (we hold the lock)
            stale.unlink(missing_ok=True)
        self._restore_aside()  # a previous --overwrite that never reached its first checkpoint
        existing = [f for f in RUN_FILES if (self.path / f).exists()]
        if existing and not resume and not overwrite:
            self.release()
            raise ValueError(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                             f"--overwrite to discard it, or choose another --output")
        self.aside = []
        if overwrite and existing:
            (self.path / self.ASIDE).mkdir(exist_ok=True)
            for f in existing:
                os.replace(self.path / f, self.path / self.ASIDE / f)
                self.aside.append(f)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def commit(self) -> None:
        """The new run wrote its first checkpoint: the overwritten run's files go for good."""
        if self.aside:
            shutil.rmtree(self.path / self.ASIDE, ignore_errors=True)
            self.aside = []

    def _restore_aside(self) -> None:
        aside = self.path / self.ASIDE
        if aside.is_dir():
            for f in aside.iterdir():
                os.replace(f, self.path / f.name)
            aside.rmdir()

    def release(self, failed: bool = False) -> None:
        if self._lock.closed:
            return
        if failed and getattr(self, "aside", None):
            for f in RUN_FILES:  # what the failed run wrote goes; the overwritten run comes back
                if f not in self.aside:
                    (self.path / f).unlink(missing_ok=True)
            self._restore_aside()
        if failed and self.created and not any(p.name != ".lock" for p in self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)  # still holding the lock: nobody else uses it
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

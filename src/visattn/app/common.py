"""Helpers every command shares: argument types, ``--set`` overrides, a progress bar, text tables, the header line,
and the one place where errors become exit codes."""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import platform
import sys
import time
from collections.abc import Callable

import torch

from .._version import __version__

# exit codes: 2 for a user error (bad argument, missing or unreadable file), 128 + N for a signal
USER_ERROR = 2
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, PermissionError, ImportError)


def parse_size(text: str) -> tuple[int, int]:
    """``"56"`` -> (56, 56); ``"56x40"`` -> (56, 40)."""
    parts = text.lower().replace("x", " ").split()
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 56 or 56x40, got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"size must look like 56 or 56x40 with sides >= 1, got {text!r}")
    return dims


def parse_list(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(t) for t in parse_list(text)]


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in parse_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive(kind: Callable = int, minimum=1) -> Callable[[str], object]:
    """An argparse type: a number of ``kind`` that is finite and >= ``minimum``."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value == value or value in (float("inf"), float("-inf")) or value < minimum:  # NaN fails ==
            raise argparse.ArgumentTypeError(f"expected a finite number >= {minimum}, got {text!r}")
        return value
    return convert


def threads_arg(text: str):
    """An argparse type: ``auto`` or a positive number of threads."""
    return "auto" if text == "auto" else positive(int)(text)


def choose_threads(requested="auto") -> int:
    """CPU threads for PyTorch's intra-op work. ``auto``: the cores not already busy when the command starts
    (the cores this process may use minus the 1-minute load average, shared among the ``torchrun`` processes of
    this machine), at least 1; an ``OMP_NUM_THREADS`` set by the user wins. On a busy machine a thread more than the
    idle cores makes every parallel region wait for a descheduled thread: training on 2 cores beside one CPU-bound
    process took 2x as long with 2 threads as with 1 (benchmarks/RESULTS.md section 18)."""
    if requested != "auto":
        return int(requested)
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(cores, cores - busy) // local)


def set_threads(requested="auto") -> int:
    """Apply :func:`choose_threads`; returns the count."""
    n = choose_threads(requested)
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def threads(requested="auto"):
    """:func:`set_threads` for a command's body; the previous count is restored afterwards (``main([...])`` called
    in a long-lived process leaves it as it was)."""
    before = torch.get_num_threads()
    try:
        yield set_threads(requested)
    finally:
        torch.set_num_threads(before)


def fraction(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    value = positive(float, 0.0)(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def parse_overrides(items: list[str] | None) -> dict:
    """``["embed_dim=32", "depths=(1,1,1,1)"]`` -> dict; values are Python literals (strings if they are not)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"model overrides look like key=value (e.g. embed_dim=32), got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = value.strip()
    return out


def header() -> str:
    return (f"visattn {__version__} | torch {torch.__version__} | {platform.processor() or platform.machine()} | "
            f"{torch.get_num_threads()} threads")


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); text columns are left-aligned, numbers right-aligned."""
    def fmt(v, f):
        return "-" if v is None else format(v, f)

    cells = [[fmt(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    left = [all(isinstance(r.get(k), str) for r in rows) for k, _, _ in columns]

    def join(values):
        parts = (v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left, strict=True))
        return "  ".join(parts).rstrip()

    head = join([h for _, h, _ in columns])
    return "\n".join([head, "-" * len(head)] + [join(c) for c in cells])


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:110].ljust(110) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


_OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory", "failed to allocate")


def out_of_memory(err: BaseException) -> bool:
    """A failed allocation: ``MemoryError``, or the RuntimeError PyTorch's CPU / CUDA allocators raise."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError)
                                            and any(m in str(err).lower() for m in _OOM_MARKERS))


def exit_code(command: str, fn: Callable[[], int | None]) -> int:
    """Run a command body; a user error prints ``visattn COMMAND: error: ...`` and returns 2, a resource failure
    (memory exhausted, a write that failed: disk full, file-size limit) prints what happened and returns 1."""
    try:
        return fn() or 0
    except USER_ERRORS as err:
        print(f"visattn {command}: error: {err}", file=sys.stderr)
        return USER_ERROR
    except (MemoryError, RuntimeError) as err:
        if not out_of_memory(err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        print(f"visattn {command}: error: out of memory ({first}); use a smaller --batch / --batch-size or --size, "
              f"or a machine with more memory", file=sys.stderr)
        return 1
    except OSError as err:  # not a missing file (a user error above): a write that failed
        print(f"visattn {command}: error: {err}", file=sys.stderr)
        return 1

"""Markdown tables for RESULTS.md from the JSON that ``benchmarks/run.sh`` writes (run after it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parent / "results"
TARGETS = {  # block -> (fwd speed-up, fwd+bwd speed-up) floors; memory ratio <= 0.5 in both modes
    "hilo": (2.0, 1.5), "clo": (2.0, 1.5), "dilated": (3.0, 1.5), "outlook": (3.0, 1.5),
}


def runs(rows: list[dict], key: str, fmt: str = ".2f") -> str:
    return " / ".join(format(r[key], fmt) for r in rows)


def load(name: str) -> list[dict]:
    return json.loads((ROOT / name / "bench.json").read_text())["results"]


def fast_rows(tag: str) -> dict:
    """(block, size, batch, mode, dim) -> [fast rows of run 1 and run 2]."""
    out: dict = {}
    for run in (1, 2):
        for r in load(f"{tag}-{run}"):
            if r["impl"] == "fast" and "speedup" in r:
                out.setdefault((r["name"], tuple(r["size"]), r["batch"], r["mode"], r["dim"]), []).append(r)
    return out


def targets_table() -> str:
    lines = ["| block | dim | HxW | B | mode | fast ms (runs) | speed-up ref/fast (runs) | peak fast/ref | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for tag in ("d64-b8", "d128-b8", "d64-112-b1"):
        for (name, size, batch, mode, dim), rs in sorted(fast_rows(tag).items(), key=lambda kv: (
                list(TARGETS).index(kv[0][0]), kv[0][1], kv[0][3])):
            floor = TARGETS[name][0 if mode == "fwd" else 1]
            ok = all(r["speedup"] >= floor for r in rs) and all(r["mem_ratio"] <= 0.5 for r in rs)
            some = any(r["speedup"] >= floor for r in rs) and all(r["mem_ratio"] <= 0.5 for r in rs)
            verdict = "met" if ok else ("met in one run" if some else "missed")
            lines.append(f"| {name} | {dim} | {size[0]}x{size[1]} | {batch} | {mode} | "
                         f"{runs(rs, 'latency_ms', '.1f')} | "
                         f"{runs(rs, 'speedup', '.2f')} | "
                         f"{runs(rs, 'mem_ratio', '.2f')} | >= {floor:g}x, <= 0.5: {verdict} |")
    return "\n".join(lines)


def claim_table() -> str:
    lines = ["| run | HiLo (LITv2 stage 3) ms | window 7 ms | SRA 2 ms | window / HiLo | SRA / HiLo |",
             "|---|---|---|---|---|---|"]
    for run in (1, 2):
        rows = {r["name"]: r["latency_ms"] for r in load(f"hilo-claim-{run}")}
        h = rows["hilo_lit"]
        lines.append(f"| {run} | {h:.1f} | {rows['window']:.1f} | {rows['sra']:.1f} | {rows['window'] / h:.2f} | "
                     f"{rows['sra'] / h:.2f} |")
    return "\n".join(lines)


def models_table() -> str:
    lines = ["| backbone | B | fast images/s (runs) | reference images/s (runs) | speed-up (runs) | peak fast/ref |",
             "|---|---|---|---|---|---|"]
    rows: dict = {}
    for run in (1, 2):
        for r in load(f"models-{run}"):
            rows.setdefault((r["name"], r["batch"], r["impl"]), []).append(r)
    for (name, batch, impl), rs in sorted(rows.items()):
        if impl != "fast":
            continue
        ref = rows[(name, batch, "reference")]
        lines.append(f"| {name} | {batch} | {runs(rs, 'throughput', '.1f')} | "
                     f"{runs(ref, 'throughput', '.1f')} | "
                     f"{runs(rs, 'speedup', '.2f')} | "
                     f"{runs(rs, 'mem_ratio', '.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    machine = json.loads((ROOT / "d64-b8-1" / "bench.json").read_text())["machine"]
    print("machine:", json.dumps(machine))
    for title, fn in (("targets", targets_table), ("claim", claim_table), ("models", models_table)):
        print(f"\n<!-- {title} -->\n{fn()}")
    sys.exit(0)

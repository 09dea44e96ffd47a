"""Markdown tables for RESULTS.md sections 9-11 from what ``benchmarks/run_models.sh`` writes (run after it)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent / "results"
MODELS = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]
# issue 11's floors: (setting, model) -> speed-up floor (and peak-memory ceiling for the training step)
TARGETS = {"e224f": 1.2, "e512f": 1.5, "e512t": 1.5}
TARGETS_512_FWD = {"dilateformer_tiny": 2.5, "volo_d1": 2.5}


def load(tag: str, run: int) -> dict:
    rows = json.loads((ROOT / f"{tag}-{run}" / "bench.json").read_text())["results"]
    return {(r["name"], r.get("label", r["impl"])): r for r in rows}


def both(tag: str) -> list[dict]:
    return [load(tag, run) for run in (1, 2) if (ROOT / f"{tag}-{run}").exists()]


def joined(values, fmt: str) -> str:
    return " / ".join("-" if v is None else format(v, fmt) for v in values)


def eager_table(tag: str) -> str:
    runs = both(tag)
    training = tag.endswith("t")
    best = "fast" if training else "fused"
    head = (f"| model | reference ms | fast ms | {'' if training else 'fused ms | '}ref/fast | "
            f"{'' if training else 'ref/fused | '}peak fast/ref | target |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in MODELS:
        get = [lambda key, r=r, m=m: r.get((m, key)) for r in runs]
        ref = [g("reference")["latency_ms"] for g in get]
        fast = [g("fast")["latency_ms"] for g in get]
        floor = TARGETS_512_FWD.get(m, TARGETS[tag]) if tag == "e512f" else TARGETS[tag]
        ratios = [g(best)["speedup"] for g in get]
        mem = [g("fast")["mem_ratio"] for g in get]
        met = all(x >= floor for x in ratios) and (not training or all(x <= 0.6 for x in mem))
        cells = [m, joined(ref, ".0f"), joined(fast, ".0f")]
        if not training:
            cells.append(joined([g("fused")["latency_ms"] for g in get], ".0f"))
        cells.append(joined([g("fast")["speedup"] for g in get], ".2f"))
        if not training:
            cells.append(joined(ratios, ".2f"))
        cells += [joined(mem, ".2f"), f">= {floor}{' and <= 0.6 memory' if training else ''}: "
                                       f"{'met' if met else 'not met'}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runtime_table(tag: str, mode: str) -> str:
    runs = both(tag)
    base = "fused" if mode == "fwd" else "fast"
    paths = [f"{base}/compile"] + ([f"{base}/onnxruntime"] if mode == "fwd" else [])
    head = f"| model | {base} eager ms | " + " | ".join(f"{p} ms | eager/{p.split('/')[1]}" for p in paths)
    head += " | compile s | images/s eager / compiled |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in MODELS:
        eager = [r[(m, base)] for r in runs]
        cells = [m, joined([e["latency_ms"] for e in eager], ".1f")]
        for p in paths:
            rows = [r[(m, p)] for r in runs]
            cells += [joined([x["latency_ms"] for x in rows], ".1f"),
                      joined([e["latency_ms"] / x["latency_ms"] for e, x in zip(eager, rows, strict=True)], ".2f")]
        compiled = [r[(m, f"{base}/compile")] for r in runs]
        cells.append(joined([c["first_call_s"] for c in compiled], ".0f"))
        cells.append(" / ".join(f"{e['throughput']:.1f} -> {c['throughput']:.1f}"
                                for e, c in zip(eager, compiled, strict=True)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for tag, title in (("e224f", "224 px, batch 8, forward"), ("e512f", "512 px, batch 1, forward"),
                       ("e512t", "512 px, batch 2, training step (forward + backward)")):
        print(f"### {title}\n\n{eager_table(tag)}\n")
    print(f"### inference, 224 px, batch 1\n\n{runtime_table('rt-fwd', 'fwd')}\n")
    print(f"### training step, 224 px, batch 8\n\n{runtime_table('rt-train', 'fwdbwd')}\n")

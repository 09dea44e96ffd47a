#!/usr/bin/env bash
# What anyone with a CUDA GPU runs first (about 5-8 minutes on a current data-centre GPU): the cuda tests, then the
# GPU tables of benchmarks/RESULTS.md section 13, written to benchmarks/results/gpu-*/ (bench.csv, bench.json with the
# GPU's name). Needs the test extra in a CUDA build of torch; timm for the VOLO peer (optional).
#   bash benchmarks/gpu.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
python3 -m pytest -m cuda -q tests/test_cuda.py
b="python3 -m visattn bench --device cuda --no-plot"
for dtype in float32 bfloat16; do
  # the four paper blocks, fast vs the official formulation, forward and forward+backward
  $b --dtype $dtype --sizes 56,112 --batch 64 --repeat 10 --out $out/gpu-blocks-$dtype
done
# the four smallest backbones: inference and a training step, 224 batch 64 and 512 batch 8
$b --models litv2_s,dilateformer_tiny,volo_d1,cloformer_xxs --model-size 224 --model-batch 64 --repeat 5 \
  --out $out/gpu-models-224
$b --models litv2_s,dilateformer_tiny,volo_d1,cloformer_xxs --model-size 512 --model-batch 8 --repeat 5 \
  --out $out/gpu-models-512
# VOLO-D1 against timm's with the same weights (skipped without timm)
if python3 -c "import timm" 2>/dev/null; then
  $b --models volo_d1 --peer timm --model-batch 64 --repeat 5 --out $out/gpu-volo-timm
fi
python3 - "$out" > "$out/gpu-tables.md" <<'PY'
import json, sys
from pathlib import Path
for folder in sorted(Path(sys.argv[1]).glob("gpu-*/")):
    data = json.loads((folder / "bench.json").read_text())
    print(f"\n### {folder.name} ({data['machine'].get('gpu', '?')}, torch {data['machine']['torch']})\n")
    print("| case | path | mode | ms | items/s | peak MiB | ref/path | mem path/ref |\n|---|---|---|---|---|---|---|---|")
    for r in data["results"]:
        if "latency_ms" not in r:
            continue
        f = lambda k, fmt=".2f": format(r[k], fmt) if r.get(k) is not None else ""
        print(f"| {r['name']} {r['size'][0]}x{r['size'][1]} b{r['batch']} {r['dtype']} | {r.get('label', r['impl'])} | "
              f"{r['mode']} | {f('latency_ms')} | {f('throughput', '.0f')} | {f('peak_mib', '.0f')} | {f('speedup')} | "
              f"{f('mem_ratio')} |")
PY
echo "GPU results in $out/gpu-*; the tables in $out/gpu-tables.md go into RESULTS.md section 13"

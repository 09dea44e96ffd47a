#!/usr/bin/env bash
# The measurements behind benchmarks/RESULTS.md. Each command is run twice (the machine is noisy); outputs land in
# benchmarks/results/<name>-<run>/ (bench.csv, bench.json with the machine, bench.png).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
for run in 1 2; do
  # the issue's target shapes, both paths, forward and forward+backward
  visattn bench --dim 64 --sizes 56,80x48 --batch 8 --repeat 7 --out $out/d64-b8-$run --no-plot
  visattn bench --dim 128 --sizes 28 --batch 8 --repeat 7 --out $out/d128-b8-$run --no-plot
  visattn bench --dim 64 --sizes 112 --batch 1 --repeat 7 --out $out/d64-112-b1-$run --no-plot
  # the HiLo paper's CPU claim: LITv2 stage-3 settings, all three blocks on their fast paths
  visattn bench --blocks hilo_lit,window,sra --dim 384 --heads 12 --sizes 14 --batch 16 --mode fwd --impl fast \
    --repeat 15 --out $out/hilo-claim-$run --no-plot
  # backbones at 224, batch 1 and 8
  visattn bench --models litv2_s,dilateformer_tiny,volo_d1,cloformer_xxs --mode fwd --repeat 5 --warmup 1 \
    --out $out/models-$run --no-plot
done
# the default sweep (README main job), with its plot
visattn bench --out $out/default

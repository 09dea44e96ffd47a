#!/usr/bin/env bash
# Whole-model measurements behind benchmarks/RESULTS.md sections 9-11 (issue 11), each run twice: eager reference /
# fast / fused paths at the issue's three settings, then eager vs torch.compile vs onnxruntime. Outputs land in
# benchmarks/results/<name>-<run>/; `python3 benchmarks/summarize_models.py` prints the tables. About 35 minutes
# per run on a 2-core CPU (compiles and exports included). Needs the onnx extra for the onnxruntime rows.
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
M=litv2_s,dilateformer_tiny,volo_d1,cloformer_xxs
for run in 1 2; do
  export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)  # cold compiles: the first-call column is the full compile time
  visattn bench --models $M --model-size 224 --model-batch 8 --mode fwd --repeat 5 --no-plot --out $out/e224f-$run
  visattn bench --models $M --model-size 512 --model-batch 1 --mode fwd --repeat 5 --no-plot --out $out/e512f-$run
  visattn bench --models $M --model-size 512 --model-batch 2 --mode fwdbwd --repeat 3 --no-plot --out $out/e512t-$run
  visattn bench --models $M --model-size 224 --model-batch 1 --mode fwd --runtime eager,compile,onnxruntime \
    --repeat 5 --no-plot --out $out/rt-fwd-$run
  visattn bench --models $M --model-size 224 --model-batch 8 --mode fwdbwd --runtime eager,compile --repeat 3 \
    --no-plot --out $out/rt-train-$run
  python3 benchmarks/attention_share.py --size 224 --batch 8 > $out/share-224-b8-$run.txt
  python3 benchmarks/attention_share.py --size 512 --batch 1 > $out/share-512-b1-$run.txt
done

"""ONNX export of each family's smallest variant at 224 (dynamic batch / height / width): export time, graph size,
then onnxruntime with its default session options (spinning threads) against the fused eager model, each measured
alone at batch 1 with the same threads (the interleaved comparison is ``visattn bench --runtime onnxruntime``).

    python benchmarks/onnx_models.py > benchmarks/results/onnx-models.txt
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import visattn
from visattn.app.runtimes import export_onnx
from visattn.app.timing import time_call


def median_ms(fn) -> float:
    return 1e3 * statistics.median(time_call(fn, warmup=2, repeat=10))


def main(names):
    import onnx
    import onnxruntime as ort

    warnings.filterwarnings("ignore")
    x = torch.randn(1, 3, 224, 224)
    print("model  export s  MiB  nodes  eager-fused ms  onnxruntime ms  eager/onnxruntime")
    for name in names:
        model = visattn.fuse(visattn.create_model(name))
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            path = export_onnx(model, torch.randn(2, 3, 224, 224), Path(tmp) / "m.onnx", "BCHW", verbose=False)
            seconds = time.perf_counter() - t0
            nodes = len(onnx.load(str(path), load_external_data=False).graph.node)
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            size = path.stat().st_size / 2 ** 20
        with torch.inference_mode():
            eager = median_ms(lambda m=model: m(x))
        feed = {session.get_inputs()[0].name: x.numpy()}
        runtime = median_ms(lambda s=session, f=feed: s.run(None, f))
        print(f"{name}  {seconds:.1f}  {size:.1f}  {nodes}  {eager:.1f}  {runtime:.1f}  {eager / runtime:.2f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"])

"""`visattn bench` end to end on a tiny sweep: table, CSV, JSON and PNG are written and consistent."""

import csv
import json

import pytest
import torch

import visattn
from visattn.app.cli import main
from visattn.app.timing import Case, case_macs, measure_group


def test_tiny_sweep_writes_valid_outputs(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--blocks", "hilo,dilated,outlook,clo,window,sra,mhsa", "--sizes", "5x7,8",
                 "--batch", "2", "--dim", "16", "--repeat", "2", "--warmup", "1", "--models", "cloformer_xxs",
                 "--model-size", "32", "--model-batch", "1", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "ref/path" in text and "cloformer_xxs" in text
    with open(out / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    # 7 blocks x 2 sizes x 1 batch x 2 modes x 2 paths + 1 model x 1 batch x 2 modes x 2 paths + the fused forward
    assert len(rows) == 7 * 2 * 2 * 2 + 4 + 1
    assert {r["impl"] for r in rows} == {"fast", "reference", "fused"}
    assert all(float(r["latency_ms"]) > 0 and float(r["peak_mib"]) >= 0 for r in rows)
    data = json.loads((out / "bench.json").read_text())
    assert data["machine"]["torch"] and len(data["results"]) == len(rows)
    fast = [r for r in data["results"] if r["impl"] == "fast"]
    assert all("speedup" in r and r["speedup"] > 0 for r in fast)
    pytest.importorskip("matplotlib")
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measured_macs_and_memory_are_the_cases_own():
    case = Case("block", "dilated", (6, 5), 2, "fast", "fwd", dim=12, heads=3)
    row = measure_group([case, Case("block", "dilated", (6, 5), 2, "reference", "fwd", dim=12, heads=3)], 0, 1)[0]
    assert row["gmacs"] == case_macs(case) / 1e9 > 0
    assert row["peak_mib"] > 0


@pytest.mark.parametrize("with_model", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["block", "model"])
def test_runtimes_side_by_side(tmp_path, capsys, with_model):
    """Every runtime beside eager in one sweep; with a backbone (~50 s: its compile and ONNX export) in the slow run."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out = tmp_path / "bench"
    models = ["--models", "cloformer_xxs", "--model-size", "32", "--model-batch", "1"] if with_model else []
    code = main(["bench", "--blocks", "hilo", "--sizes", "6x5", "--batch", "1", "--dim", "8", "--heads", "2",
                 *models, "--mode", "fwd", "--runtime", "eager,compile,onnxruntime", "--repeat", "2", "--warmup", "1",
                 "--out", str(out), "--no-plot"])
    assert code == 0
    text = capsys.readouterr().out
    assert "1st call s" in text
    rows = json.loads((out / "bench.json").read_text())["results"]
    labels = {(r["kind"], r["label"]) for r in rows}
    expected = {("block", "fast"), ("block", "reference"), ("block", "fast/compile"), ("block", "fast/onnxruntime")}
    if with_model:
        expected |= {("model", "fast"), ("model", "reference"), ("model", "fused"), ("model", "fused/compile"),
                     ("model", "fused/onnxruntime")}
    assert labels == expected
    for r in rows:
        assert r["latency_ms"] > 0 and r["speedup"] > 0 if r["impl"] != "reference" else True
        # peaks are measured for eager paths only (onnxruntime allocates outside PyTorch)
        assert (r["peak_mib"] is None) == (r["runtime"] != "eager")
    compiled = [r for r in rows if r["runtime"] == "compile"]
    assert compiled and all(r["first_call_s"] > r["latency_ms"] / 1e3 for r in compiled)  # compile in the 1st call


def test_runtime_modules_compute_what_eager_computes(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from visattn.app.runtimes import runtime_module

    torch.manual_seed(0)
    block = visattn.create_block("outlook", 16, 2).eval()
    x = torch.randn(2, 9, 7, 16)
    ort = runtime_module(block, "onnxruntime", x, "BHWC")
    for shape in [(1, 9, 7, 16), (3, 12, 5, 16)]:  # the export's dynamic axes
        y = torch.randn(shape)
        with torch.no_grad():
            assert torch.allclose(ort(y), block(y), atol=1e-5)
    compiled = runtime_module(visattn.create_block("hilo", 16, 2).eval(), "compile", x)  # inference: freezing
    with torch.inference_mode():
        y = torch.randn(2, 9, 7, 16)
        assert torch.allclose(compiled(y), compiled._orig_mod(y), atol=1e-5)
    with pytest.raises(ValueError, match="inference only"):
        runtime_module(block, "onnxruntime", x, "BHWC", mode="fwdbwd")
    with pytest.raises(ValueError, match="unknown runtime"):
        runtime_module(block, "tvm", x)


def test_bad_bench_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--blocks", "nope"])
    assert "unknown block 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--models", "resnet50"])
    assert "unknown model 'resnet50'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--batch", "0"])
    with pytest.raises(SystemExit):
        main(["bench", "--runtime", "eager,tensorrt"])
    assert "unknown runtime" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--runtime", "onnxruntime", "--dtype", "float16"])
    assert "float32" in capsys.readouterr().err


def test_ratios_for_every_path_beside_the_reference_and_the_peer():
    from visattn.app.report import add_ratios

    def row(label, ms, peak):
        impl, _, runtime = label.partition("/")
        return dict(kind="model", name="m", size=(8, 8), batch=1, mode="fwd", dim=64, heads=4, dtype="float32",
                    device="cpu", impl=impl, runtime=runtime or "eager", label=label, latency_ms=ms, p25_ms=ms,
                    p75_ms=ms, peak_mib=peak)

    rows = add_ratios([row("reference", 20.0, 8.0), row("fast", 10.0, 4.0), row("fused", 8.0, 4.0),
                       row("fused/onnxruntime", 5.0, None), row("timm", 12.0, 6.0)])
    by = {r["label"]: r for r in rows}
    assert "speedup" not in by["reference"]
    assert by["fast"]["speedup"] == 2.0 and by["fused"]["speedup"] == 2.5 and by["fused/onnxruntime"]["speedup"] == 4.0
    assert by["fast"]["mem_ratio"] == 0.5 and by["fused/onnxruntime"]["mem_ratio"] is None  # unmeasured peak
    assert by["fast"]["vs_timm"] == 1.2 and by["fused"]["vs_timm"] == 1.5 and "vs_timm" not in by["timm"]

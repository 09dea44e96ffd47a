"""`visattn bench` end to end on a tiny sweep: table, CSV, JSON and PNG are written and consistent."""

import csv
import json

import pytest

from visattn.app.cli import main
from visattn.app.timing import Case, case_macs, measure_group


def test_tiny_sweep_writes_valid_outputs(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--blocks", "hilo,dilated,outlook,clo,window,sra,mhsa", "--sizes", "5x7,8",
                 "--batch", "2", "--dim", "16", "--repeat", "2", "--warmup", "1", "--models", "cloformer_xxs",
                 "--model-size", "32", "--model-batch", "1", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "ref/fast" in text and "cloformer_xxs" in text
    with open(out / "bench.csv") as f:
        rows = list(csv.DictReader(f))
    # 7 blocks x 2 sizes x 1 batch x 2 modes x 2 paths + 1 model x 1 batch x 2 modes x 2 paths
    assert len(rows) == 7 * 2 * 2 * 2 + 4
    assert {r["impl"] for r in rows} == {"fast", "reference"}
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


def test_bad_bench_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--blocks", "nope"])
    assert "unknown block 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--models", "resnet50"])
    assert "unknown model 'resnet50'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--batch", "0"])

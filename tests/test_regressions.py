"""Regressions of the third adversarial pass (issue 20) outside the training loop: fused weights that change, VOLO's
position-embedding adoption, weights of the wrong dtype, damaged safetensors, CloAttention's dynamic ONNX graph,
bench / export arguments, resource guards and argument types."""

import json
import struct

import pytest
import torch
from tiny_models import tiny

import visattn
from visattn.app.cli import main
from visattn.checkpoint import load_file


def test_a_fused_model_given_new_weights_computes_with_them():
    source, other = tiny("litv2_s"), tiny("litv2_s")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused = visattn.fuse(source)
    fused.load_state_dict(visattn.fuse(other).state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), visattn.fuse(other)(x), rtol=1e-5, atol=1e-5)
        hilo = next(m for m in fused.modules() if isinstance(m, visattn.HiLoAttention) and m.h_heads and m.l_heads)
        hilo.l_q.weight.mul_(2)  # an in-place edit is seen too
        y = torch.randn(1, 8, 8, hilo.dim)
        expected = torch.cat([hilo.h_qkv(y), hilo.l_q(y)], -1)
        torch.testing.assert_close(torch.nn.functional.linear(y, *hilo._concat_input()), expected)
        hilo(y)
        torch.testing.assert_close(hilo.fused_in_weight, torch.cat([hilo.h_qkv.weight, hilo.l_q.weight]))


def test_volo_model_is_untouched_by_a_refused_load_and_adopts_only_sane_grids():
    model = tiny("volo_d1", img_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = tiny("volo_d1", img_size=96).state_dict()
    sd.pop("network.0.0.mlp.fc1.weight")  # refused: a missing key
    with pytest.raises(ValueError, match="missing keys"):
        visattn.load_official(model, sd)
    assert model.img_size == 64 and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    batch2 = dict(before, pos_embed=torch.zeros(2, 4, 4, 64))  # not (1, h, w, C): a shape mismatch, not adopted
    with pytest.raises(ValueError, match="shape mismatch"):
        visattn.load_official(model, batch2)
    huge = dict(before, pos_embed=torch.zeros(1, 1, 1, 64).expand(1, 5000, 5000, 64))  # a few bytes on disk
    with pytest.raises(ValueError, match="adopts grids of 1 to 128 tokens a side"):
        visattn.load_official(model, huge)
    assert tuple(model.pos_embed.shape) == (1, 4, 4, 64)
    report = visattn.load_official(model, dict(before, pos_embed=torch.zeros(1, 6, 5, 64)))
    assert tuple(model.pos_embed.shape) == (1, 6, 5, 64) and report.adopted


def test_weights_of_another_kind_are_refused():
    model = tiny("litv2_s")
    sd = {k: (v.to(torch.int64) if k == "head.weight" else v) for k, v in model.state_dict().items()}
    sd["norm.weight"] = sd["norm.weight"].to(torch.int32)
    with pytest.raises(ValueError, match="integer / bool tensors where the model has floating-point weights"):
        visattn.load_official(tiny("litv2_s"), sd)
    with pytest.raises(ValueError, match="not tensors"):
        visattn.load_official(tiny("litv2_s"), dict(model.state_dict(), note="hello"))


def write_safetensors(path, entries):
    """entries: name -> (dtype string, shape, start, end); body of the largest end."""
    header = {name: dict(dtype=d, shape=s, data_offsets=[a, b]) for name, (d, s, a, b) in entries.items()}
    raw = json.dumps(header).encode()
    size = max(b for _, _, _, b in entries.values())
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(size))


def test_damaged_safetensors_offsets_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    write_safetensors(path, {"a": ("F32", [2], 0, 8), "b": ("F32", [2], 8, 16)})
    assert set(load_file(path)) == {"a", "b"}
    write_safetensors(path, {"a": ("F32", [2], 0, 8), "b": ("F32", [2], 4, 12)})
    with pytest.raises(ValueError, match="overlap"):
        load_file(path)
    raw = json.dumps({"a": dict(dtype="F32", shape=[4], data_offsets=[0, 16])}).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))  # data ends past the file
    with pytest.raises(ValueError, match="outside the file"):
        load_file(path)
    write_safetensors(path, {"a": ("F32", [3], 0, 8)})
    with pytest.raises(ValueError, match="8 bytes for shape"):
        load_file(path)


def test_cloattention_onnx_graph_is_dynamic_below_its_window(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from visattn.app.runtimes import export_onnx, verify

    block = visattn.create_block("clo", 16, 4, group_split=(2, 2), kernel_sizes=(3,), window_size=4).eval()
    for export_size, checks in (((8, 8), [(2, 3), (1, 1), (5, 9), (12, 7)]), ((1, 1), [(2, 2), (9, 6), (3, 13)])):
        path = export_onnx(block, torch.randn(1, *export_size, 16), tmp_path / "clo.onnx", "BHWC")
        assert max(verify(path, block, [torch.randn(2, h, w, 16) for h, w in checks])) < 1e-4


def test_msda_dilation_beyond_the_map_is_bounded_and_exact():
    from reference import loops

    block = visattn.MultiScaleDilatedAttention(12, 3, kernel_size=3, dilation=(1, 40, 2000)).eval()
    x = torch.randn(1, 7, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(block(x), loops.msda(block, x), rtol=1e-5, atol=1e-5)
        big = visattn.MultiScaleDilatedAttention(64, 2, kernel_size=3, dilation=(1, 2000)).eval()
        assert big(torch.randn(1, 64, 64, 64)).shape == (1, 64, 64, 64)  # padded by 64, not 2000


@pytest.mark.parametrize("name", ["hilo", "dilated", "outlook", "clo", "mhsa", "window", "sra"])
def test_qkv_bias_must_be_a_bool(name):
    with pytest.raises(TypeError, match="qkv_bias must be True or False, got 'no'"):
        visattn.create_block(name, 16, 4, qkv_bias="no")


def test_volo_runs_when_built_under_inference_mode():
    with torch.inference_mode():
        model = tiny("volo_d1").eval()
        x = torch.randn(1, 3, 64, 64)
        assert torch.equal(model(x), model(x))


def test_bench_refuses_bad_arguments_before_running(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for args, message in ((["--device", "tpu"], "measures cpu or cuda"),
                          (["--heads", "3"], "does not divide --dim 64"),
                          (["--out", str(tmp_path / "file")], "is a file; name a folder"),
                          (["--runtime", "onnxruntime", "--mode", "fwdbwd"], "inference only: add --mode fwd")):
        with pytest.raises(SystemExit):
            main(["bench", "--sizes", "8", "--batch", "1", "--repeat", "1", *args])
        assert message in capsys.readouterr().err, args


def test_bench_of_backbones_says_why_there_is_no_plot_and_removes_an_old_one(tmp_path, capsys):
    (tmp_path / "bench.png").write_bytes(b"an old plot")
    assert main(["bench", "--models", "cloformer_xxs", "--model-size", "32", "--model-batch", "1", "--mode", "fwd",
                 "--repeat", "1", "--warmup", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the plot shows blocks" in out and "install the plot extra" not in out
    assert not (tmp_path / "bench.png").exists()


def test_export_arguments(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    (tmp_path / "file").write_text("x")
    assert main(["export", "--block", "hilo", "--dim", "16", "--output", str(tmp_path / "file" / "x.onnx")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["export", "--block", "hilo", "--dim", "16", "--opset", "99",
                 "--output", str(tmp_path / "a.onnx")]) == 2
    assert "--opset 99 is not written" in capsys.readouterr().err and not (tmp_path / "a.onnx").exists()
    assert main(["export", "--model", "litv2_s", "--size", "16", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "needs H, W >= 32" in capsys.readouterr().err
    sizes = "9x9,10x7,11x13,5x6,8x12"
    assert main(["export", "--block", "hilo", "--dim", "16", "--heads", "2", "--size", "8x8", "--verify", sizes,
                 "--output", str(tmp_path / "h.onnx")]) == 0
    assert "verified on 5 sizes" in capsys.readouterr().out


def test_a_failed_export_verification_removes_the_file(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from visattn.app import export as export_cmd

    monkeypatch.setattr(export_cmd, "verify", lambda path, module, inputs: [1.0] * len(inputs))
    assert main(["export", "--block", "hilo", "--dim", "16", "--heads", "2", "--size", "8x8",
                 "--output", str(tmp_path / "h.onnx")]) == 1
    assert "was removed" in capsys.readouterr().err and not (tmp_path / "h.onnx").exists()


def test_out_of_memory_is_a_message_not_a_traceback(capsys, monkeypatch):
    from visattn.app import common

    def explode():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 1677721600 bytes")

    assert common.exit_code("export", explode) == 1
    assert "out of memory" in capsys.readouterr().err

"""Official checkpoints: the reduced official backbones' logits, wrappers, safetensors, resizing, refusal of
pickles that would run code."""

import argparse
import json
import os
from pathlib import Path

import pytest
import torch

import visattn
from visattn.checkpoint import load_file

GOLDENS = Path(__file__).parent / "fixtures" / "goldens"
BACKBONES = {
    "backbone_litv2_cls__e16_d1111__64x64.pt": "litv2_s",
    "backbone_dilateformer__e12_d1111__64x64.pt": "dilateformer_tiny",
    "backbone_volo__l1111_e32-64__64x64.pt": "volo_d1",
    "backbone_cloformer__e8_d2111__128x128.pt": "cloformer_xxs",
}


def golden_model(fname, **extra):
    golden = torch.load(GOLDENS / fname, weights_only=False)
    kwargs = dict(golden["kwargs"])
    if golden["class"] != "VOLO":
        kwargs.pop("img_size", None)
    model = visattn.create_model(BACKBONES[fname], **{**kwargs, **extra}).eval()
    return golden, model


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("fname", sorted(BACKBONES))
def test_reduced_official_backbones_reproduce_logits(fname, impl):
    golden, model = golden_model(fname, impl=impl)
    report = visattn.load_official(model, {"model": golden["state_dict"]})
    assert report.loaded == len(golden["state_dict"]) and not report.dropped
    x = golden["input"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), golden["output"], rtol=1e-5, atol=2e-5)
        feats = model.forward_features(x)
        extra = golden["extra_outputs"]
        if "tokens_after_norm" in extra:  # VOLO: tokens, class logits, token-labelling logits
            torch.testing.assert_close(feats, extra["tokens_after_norm"], rtol=1e-5, atol=2e-5)
            torch.testing.assert_close(model.head(feats[:, 0]), extra["x_cls"], rtol=1e-5, atol=2e-5)
            torch.testing.assert_close(model.aux_head(feats[:, 1:]), extra["x_aux"], rtol=1e-5, atol=2e-5)
        else:
            pooled = model.forward_head(feats, pre_logits=True)
            expected = extra.get("forward_features", extra.get("forward_feature"))
            torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=2e-5)


def save_safetensors(tensors: dict, path: Path) -> None:
    """Minimal writer of the safetensors format, to test the reader."""
    names = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.bfloat16: "BF16"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def test_safetensors_and_wrappers(tmp_path):
    golden, model = golden_model("backbone_litv2_cls__e16_d1111__64x64.pt")
    sd = golden["state_dict"]
    save_safetensors(sd, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    for wrapped in ({"state_dict": sd}, {"state_dict_ema": sd}, {f"module.{k}": v for k, v in sd.items()},
                    {f"backbone.{k}": v for k, v in sd.items()} | {"neck.weight": torch.zeros(1)}):
        torch.save(wrapped, tmp_path / "w.pth")
        visattn.load_official(model, tmp_path / "w.pth")
    path = tmp_path / "w.safetensors"
    fresh = visattn.create_model("litv2_s", pretrained=path, **{k: v for k, v in golden["kwargs"].items()
                                                                 if k != "img_size"}).eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(golden["input"]), golden["output"], rtol=1e-5, atol=2e-5)


def test_ema_preference(tmp_path):
    golden, model = golden_model("backbone_cloformer__e8_d2111__128x128.pt")
    sd = golden["state_dict"]
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    visattn.load_official(model, {"state_dict": sd, "state_dict_ema": ema}, use_ema=True)
    torch.testing.assert_close(model.head.bias, ema["head.bias"])
    visattn.load_official(model, {"state_dict": sd, "state_dict_ema": ema})
    torch.testing.assert_close(model.head.bias, sd["head.bias"])


def test_head_of_another_class_count_is_dropped():
    golden, _ = golden_model("backbone_dilateformer__e12_d1111__64x64.pt")
    kwargs = {**golden["kwargs"], "num_classes": 3}
    kwargs.pop("img_size")
    model = visattn.create_model("dilateformer_tiny", **kwargs).eval()
    report = visattn.load_official(model, golden["state_dict"])
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    torch.testing.assert_close(model.norm.weight, golden["state_dict"]["norm.weight"])
    features = visattn.create_model("dilateformer_tiny", pretrained=golden["state_dict"], features_only=True,
                                    **{k: v for k, v in golden["kwargs"].items() if k != "img_size"})
    assert len(features(torch.randn(1, 3, 64, 64))) == 4


def test_volo_adopts_the_checkpoints_position_embedding_grid():
    """A checkpoint fine-tuned at another size (here a 4x4 grid, loaded into a model built for 6x6) keeps its
    embedding: the model then gives the official output at the checkpoint's size, and resizes at run time elsewhere."""
    golden, _ = golden_model("backbone_volo__l1111_e32-64__64x64.pt")
    kwargs = {**golden["kwargs"], "img_size": 96}  # 6x6 grid instead of the checkpoint's 4x4
    model = visattn.create_model("volo_d1", **kwargs).eval()
    report = visattn.load_official(model, golden["state_dict"])
    assert len(report.adopted) == 1 and "4x4 grid replaces 6x6" in report.adopted[0]
    assert model.pos_embed.shape[1:3] == (4, 4) and model.img_size == 64
    with torch.no_grad():
        torch.testing.assert_close(model(golden["input"]), golden["output"], rtol=1e-5, atol=2e-5)
    same = visattn.create_model("volo_d1", **golden["kwargs"]).eval()
    visattn.load_official(same, golden["state_dict"])
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), same(x))


def test_volo_high_resolution_variants():
    assert visattn.list_models("volo_d5*") == ["volo_d5", "volo_d5_448", "volo_d5_512"]
    for name, size in (("volo_d1_384", 384), ("volo_d3_448", 448), ("volo_d5_512", 512)):
        with torch.device("meta"):
            model = visattn.create_model(name)
        assert model.default_input_size == (3, size, size) and model.pos_embed.shape[1:3] == (size // 16,) * 2


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_executing_pickle_is_refused(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "payload": Exploit()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="needs code execution to unpickle.*system.*weights_only=False"):
        visattn.load_official(visattn.create_model("litv2_s"), tmp_path / "evil.pth")


def test_training_metadata_is_admitted(tmp_path):
    golden, model = golden_model("backbone_volo__l1111_e32-64__64x64.pt")
    torch.save({"state_dict": golden["state_dict"], "epoch": 3, "args": argparse.Namespace(lr=1e-3)},
               tmp_path / "ckpt.pth.tar")
    visattn.load_official(model, tmp_path / "ckpt.pth.tar")


def test_mismatches_are_reported(tmp_path):
    golden, model = golden_model("backbone_litv2_cls__e16_d1111__64x64.pt")
    sd = dict(golden["state_dict"])
    sd["norm.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"(?s)shape mismatch.*norm.weight: checkpoint \(3,\)"):
        visattn.load_official(model, sd)
    sd = {k: v for k, v in golden["state_dict"].items() if not k.startswith("layers.0.")}
    with pytest.raises(ValueError, match="missing keys.*layers.0.*strict=False"):
        visattn.load_official(model, sd)
    report = visattn.load_official(model, sd, strict=False)
    assert report.missing and all(k.startswith("layers.0.") for k in report.missing)
    with pytest.raises(FileNotFoundError):
        visattn.load_official(model, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="no state dict found"):
        visattn.load_official(model, {"epoch": 1})

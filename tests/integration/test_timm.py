"""visattn backbones through timm's public API: registry names, pretrained configs, data config and transforms,
features_only on a non-square input, official / timm checkpoints through pretrained_cfg_overlay, timm's training
pieces; timm's VOLO state dicts give the same logits in the matching visattn variant."""

import pytest
import torch

pytestmark = pytest.mark.integration  # run in the second environment that .ci/run builds

timm = pytest.importorskip("timm")
pytest.importorskip("torchvision")

import visattn  # noqa: E402
import visattn.integrations.timm as vtimm  # noqa: E402

TINY = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))


def test_every_variant_is_registered_under_its_own_prefix():
    names = timm.list_models("visattn_*")
    assert names == sorted(vtimm.PREFIX + n for n in visattn.list_models())
    assert "volo_d1_224" in timm.list_models("volo_d1*")  # timm's own names untouched
    assert vtimm.register() == []  # idempotent
    cfg = timm.create_model("visattn_cloformer_xxs").pretrained_cfg
    assert cfg["first_conv"] == "patch_embed.conv1.conv.0" and cfg["classifier"] == "head"
    assert cfg["input_size"] == (3, 224, 224) and cfg["license"] == "mit" and cfg["num_classes"] == 1000


def test_data_config_and_transform():
    model = timm.create_model("visattn_volo_d1_384", layers=(1, 1, 1, 1), num_classes=5)
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 384, 384) and config["crop_pct"] == 1.0
    transform = timm.data.create_transform(**config)
    from PIL import Image

    x = transform(Image.new("RGB", (500, 400), (10, 200, 30)))
    assert x.shape == (3, 384, 384)
    assert model.eval()(x[None]).shape == (1, 5)


def test_features_only_on_a_non_square_input():
    model = timm.create_model("visattn_litv2_s", features_only=True, out_indices=(2, 0, 3), **TINY).eval()
    assert model.feature_info.channels() == [64, 16, 128] and model.feature_info.reduction() == [16, 4, 32]
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 96, 160))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 6, 10), (2, 16, 24, 40), (2, 128, 3, 5)]
    direct = visattn.create_model("litv2_s", **TINY)
    direct.load_state_dict(model.model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(direct.eval().forward_intermediates(torch.ones(1, 3, 64, 64), (2, 0, 3)),
                                   model(torch.ones(1, 3, 64, 64)))


def test_official_checkpoint_through_pretrained_cfg_overlay(tmp_path):
    source = visattn.create_model("litv2_s", num_classes=7, **TINY).eval()
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "official.pth")
    model = timm.create_model("visattn_litv2_s", pretrained=True, num_classes=7,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth"), num_classes=7),
                              **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))
    other = timm.create_model("visattn_litv2_s", pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth"), num_classes=7),
                              **TINY)  # a new head: the classifier is left out
    assert other.head.out_features == 3
    assert torch.equal(other.norm.weight, source.norm.weight)


@pytest.mark.parametrize("name,size,other", [("volo_d1", 224, 256), ("volo_d1_384", 384, 320)])
def test_timm_volo_state_dicts_give_the_same_logits(name, size, other):
    timm_name = name if name.count("_") == 2 else f"{name}_224"
    reference = timm.create_model(timm_name).eval()  # random init is enough: same weights, same outputs
    sd = reference.state_dict()
    ours = visattn.create_model(name, pretrained=sd).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)
    grid = other // 16  # at another size: timm's model built there, its embedding resized as ours is at run time
    resized = torch.nn.functional.interpolate(sd["pos_embed"].permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic",
                                              align_corners=False).permute(0, 2, 3, 1)
    at_other = timm.create_model(timm_name, img_size=other).eval()
    at_other.load_state_dict({**sd, "pos_embed": resized})
    x = torch.randn(1, 3, other, other)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), at_other(x), rtol=0, atol=1e-5)


def test_timm_training_pieces_drive_a_visattn_model():
    import timm.loss
    import timm.optim
    import timm.utils

    model = timm.create_model("visattn_cloformer_xxs", num_classes=4, embed_dims=(8, 16, 32, 64),
                              num_heads=(2, 2, 4, 8), group_splits=((1, 1), (1, 1), (2, 2), (2, 6)))
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    loss_fn = timm.loss.LabelSmoothingCrossEntropy(0.1)
    model.set_grad_checkpointing(True)
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 4
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    top1, = timm.utils.accuracy(model.eval()(x), y, topk=(1,))
    assert 0 <= float(top1) <= 100
    model.reset_classifier(2)
    assert model(x[:1]).shape == (1, 2)


def test_readme_integration_examples_run_as_written(monkeypatch):
    from test_readme import INTEGRATIONS, ROOT

    monkeypatch.chdir(ROOT)
    own = [c for c in INTEGRATIONS if not any(k in c for k in ("smp.", "fpn_backbone", "mmpretrain"))]
    assert len(own) == 2  # YOLO and timm (test_dense runs the detection / segmentation recipes)
    for code in own:
        exec(compile(code, "README.md", "exec"), {})


def test_bench_times_timm_volo_as_a_peer(tmp_path, capsys):
    from visattn.app.cli import main

    assert main(["bench", "--models", "volo_d1", "--peer", "timm", "--model-size", "64", "--model-batch", "1",
                 "--mode", "fwd", "--repeat", "1", "--warmup", "0", "--no-plot", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "timm/path" in out and " timm " in out
    assert (tmp_path / "bench.csv").read_text().count("timm") >= 1


@pytest.mark.parametrize("name,size,batch", [("volo_d1", 224, 2), ("volo_d1_384", 384, 1)])
def test_volo_inference_memory_at_or_below_timms(name, size, batch):
    """Peak tensor memory of an inference forward (visattn.memory.peak_memory): the strided outlook kernel gathers
    its windows in groups, the in-place softmax of fresh logits and handed-over stage inputs keep visattn's VOLO at
    or below timm's (it was 1.11x at 224 and 1.18x at 384)."""
    from visattn.memory import peak_memory

    timm_name = name if name.count("_") == 2 else f"{name}_224"
    reference = timm.create_model(timm_name).eval()
    ours = visattn.create_model(name, pretrained=reference.state_dict()).eval()
    x = torch.randn(batch, 3, size, size)
    peaks = []
    for model in (reference, ours):
        with torch.inference_mode():
            model(x)
            with peak_memory("cpu") as mem:
                model(x)
        peaks.append(mem.peak)
    assert peaks[1] <= peaks[0], [p / 2 ** 20 for p in peaks]


def test_timm_pretrained_true_fetches_through_visattn(tmp_path, monkeypatch):
    """timm's pretrained=True for a visattn name fetches the official file through visattn.hub (a loopback mirror
    here) and loads it; a variant without published weights says where to get them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_hub import Server, checkpoint_bytes

    server = Server()
    try:
        monkeypatch.setenv("VISATTN_WEIGHTS_MIRROR", server.url)
        monkeypatch.setenv("VISATTN_CACHE_DIR", str(tmp_path / "cache"))
        data, state = checkpoint_bytes("volo_d1")
        server.files["d1_224_84.2.pth.tar"] = data
        from tiny_models import tiny_config

        model = timm.create_model("visattn_volo_d1", pretrained=True, **tiny_config("volo_d1"))
        assert torch.equal(model.state_dict()["pos_embed"], state["pos_embed"])
        assert server.requests == ["d1_224_84.2.pth.tar"]
        with pytest.raises(ValueError, match="not published CloFormer checkpoints"):
            timm.create_model("visattn_cloformer_xxs", pretrained=True)
    finally:
        server.close()

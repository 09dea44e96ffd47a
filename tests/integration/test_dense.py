"""visattn backbones where dense models are built: segmentation_models_pytorch (timm universal encoders),
torchvision's detectors (through visattn.integrations.torchvision) and mmpretrain's TIMMBackbone. Every family on
its reduced configuration (tests/tiny_models.py); short training runs on generated shapes / boxes data sets."""

import pytest
import torch
import torch.nn.functional as F
from tiny_models import SMALLEST, tiny_config

pytestmark = pytest.mark.integration  # run in the second environment that .ci/run builds

timm = pytest.importorskip("timm")
pytest.importorskip("torchvision")

import visattn  # noqa: E402
import visattn.integrations.timm  # noqa: E402,F401  (registers visattn_<name> in timm)


def shapes_segmentation(n: int, size: int = 64, seed: int = 0):
    """Squares (class 1) and discs (class 2) of random colours on dim noise, with their masks (class 0: background)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.rand(n, 3, size, size, generator=g) * 0.3
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(3):
            cls = int(torch.randint(1, 3, (1,), generator=g))
            cy, cx = torch.randint(8, size - 8, (2,), generator=g).tolist()
            r = int(torch.randint(5, 12, (1,), generator=g))
            square = ((yy - cy).abs() <= r) & ((xx - cx).abs() <= r)
            inside = square if cls == 1 else (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            images[i][:, inside] = (torch.rand(3, generator=g) * 0.5 + 0.5)[:, None]
            masks[i][inside] = cls
    return images, masks


def mean_iou(model, images, masks, classes: int = 3) -> float:
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(1)
    ious = [((pred == c) & (masks == c)).sum() / ((pred == c) | (masks == c)).sum() for c in range(classes)
            if ((pred == c) | (masks == c)).any()]
    return float(torch.stack(ious).mean())


# ---- segmentation_models_pytorch -------------------------------------------------------------------------------
smp = pytest.importorskip("segmentation_models_pytorch")


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("arch", ["Unet", "UPerNet"])
def test_smp_decoders_train_on_every_family(name, arch):
    model = getattr(smp, arch)(f"tu-visattn_{name}", encoder_weights=None, classes=3, **tiny_config(name))
    assert model.encoder.model.feature_info.reduction() == [4, 8, 16, 32]
    for size in (256, 224):  # 224: accepted by smp (a multiple of 32), not a multiple of 64
        x = torch.randn(2, 3, size, size)
        out = model.train()(x)
        assert out.shape == (2, 3, size, size)
        out.square().mean().backward()
        assert all(p.grad is not None for p in model.encoder.parameters())
        model.zero_grad()


@pytest.mark.parametrize("name", SMALLEST)
def test_smp_full_size_encoders_and_more_decoders(name):
    """The variants as registered (smp's own default path) and the other pyramid decoders."""
    with torch.no_grad():
        assert smp.Unet(f"tu-visattn_{name}", encoder_weights=None, classes=2).eval()(
            torch.randn(1, 3, 224, 160)).shape == (1, 2, 224, 160)
        for arch in ("FPN", "Segformer", "Linknet", "MAnet", "UnetPlusPlus"):
            model = getattr(smp, arch)(f"tu-visattn_{name}", encoder_weights=None, classes=2, **tiny_config(name))
            assert model.eval()(torch.randn(1, 3, 96, 64)).shape == (1, 2, 96, 64), arch


def test_smp_encoder_from_an_official_checkpoint(tmp_path):
    source = visattn.create_model("volo_d1", **tiny_config("volo_d1"))
    torch.save({"model": source.state_dict()}, tmp_path / "official.pth")
    model = smp.Unet("tu-visattn_volo_d1", encoder_weights=True, classes=2,
                     pretrained_cfg_overlay=dict(file=str(tmp_path / "official.pth")), **tiny_config("volo_d1"))
    encoder = model.encoder.model.model
    for key, value in encoder.state_dict().items():  # all but the new pyramid come from the file
        if not key.startswith("pyramid."):
            assert torch.equal(value, source.state_dict()[key]), key
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("arch", ["DeepLabV3Plus", "DeepLabV3", "PAN"])
def test_smp_decoders_that_need_a_dilated_encoder_say_so(arch):
    with pytest.raises(ValueError, match=r"output stride 32.*Use a decoder that takes a 4-8-16-32 pyramid: Unet"):
        getattr(smp, arch)("tu-visattn_litv2_s", encoder_weights=None)


@pytest.mark.parametrize("name", ["litv2_s", "volo_d1"])
def test_smp_unet_learns_shapes(name):
    """A short training run: mIoU on held-out images rises well above the untrained model's."""
    torch.manual_seed(0)
    train_x, train_y = shapes_segmentation(256, seed=1)
    val_x, val_y = shapes_segmentation(64, seed=2)
    model = smp.Unet(f"tu-visattn_{name}", encoder_weights=None, classes=3, decoder_channels=(128, 64, 32, 16, 16),
                     **tiny_config(name))
    before = mean_iou(model, val_x, val_y)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        idx = torch.randint(0, len(train_x), (16,), generator=g)
        loss = F.cross_entropy(model.train()(train_x[idx]), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_iou(model, val_x, val_y)
    print(f"{name}: held-out mIoU {before:.3f} untrained -> {after:.3f} after 100 steps")
    assert after > 0.45 and after > before + 0.25, (before, after)


def test_smp_unet_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from visattn.app.runtimes import export_onnx, verify

    model = smp.Unet("tu-visattn_cloformer_xxs", encoder_weights=None, classes=3,
                     **tiny_config("cloformer_xxs")).eval()
    path = export_onnx(model, torch.randn(1, 3, 128, 96), tmp_path / "unet.onnx", "BCHW")
    assert max(verify(path, model, [torch.randn(1, 3, 128, 96), torch.randn(2, 3, 160, 224)])) < 1e-4


# ---- torchvision detectors -------------------------------------------------------------------------------------
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

from visattn.integrations.torchvision import VisattnFPN, fpn_backbone  # noqa: E402

SMALL_RCNN = dict(min_size=96, max_size=128, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
                  rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64,
                  rpn_batch_size_per_image=64)


def boxes_detection(n: int, size: int = 96, seed: int = 0, masks: bool = False):
    """Red (class 1) and blue (class 2) rectangles on dim noise: images and torchvision targets."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        img = torch.rand(3, size, size, generator=g) * 0.3
        boxes, labels = [], []
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            cls = int(torch.randint(1, 3, (1,), generator=g))
            w, h = torch.randint(16, 40, (2,), generator=g).tolist()
            x0 = int(torch.randint(0, size - w, (1,), generator=g))
            y0 = int(torch.randint(0, size - h, (1,), generator=g))
            img[:, y0:y0 + h, x0:x0 + w] = torch.tensor([0.9, 0.2, 0.2] if cls == 1 else [0.2, 0.3, 0.9])[:, None, None]
            boxes.append([x0, y0, x0 + w, y0 + h])
            labels.append(cls)
        target = dict(boxes=torch.tensor(boxes, dtype=torch.float), labels=torch.tensor(labels))
        if masks:
            target["masks"] = torch.zeros(len(boxes), size, size, dtype=torch.uint8)
            for j, (x0, y0, x1, y1) in enumerate(boxes):
                target["masks"][j, y0:y1, x0:x1] = 1
        images.append(img)
        targets.append(target)
    return images, targets


def detector(kind: str, name: str, **backbone_kw):
    if kind == "retinanet":  # P3-P7, as torchvision's own RetinaNet
        body = fpn_backbone(name, out_indices=(1, 2, 3), out_channels=64,
                            extra_blocks=LastLevelP6P7(64, 64), **backbone_kw)
        return RetinaNet(body, num_classes=3, min_size=96, max_size=128)
    cls = FasterRCNN if kind == "faster_rcnn" else MaskRCNN
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 5)
    return cls(fpn_backbone(name, out_channels=64, **backbone_kw), num_classes=3, rpn_anchor_generator=anchors,
               **SMALL_RCNN)


def test_fpn_backbone_contract():
    body = fpn_backbone("cloformer_xxs", **tiny_config("cloformer_xxs")).eval()
    assert isinstance(body, VisattnFPN) and body.out_channels == 256
    with torch.no_grad():
        out = body(torch.randn(1, 3, 128, 96))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(v.shape[2:]) for v in out.values()] == [(32, 24), (16, 12), (8, 6), (4, 3), (2, 2)]
    assert all(v.shape[1] == 256 for v in out.values())
    with pytest.raises(ValueError, match="out_channels must be a positive int"):
        fpn_backbone("litv2_s", out_channels=0)
    with pytest.raises(TypeError, match="wraps a visattn feature extractor"):
        VisattnFPN(torch.nn.Identity())


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("kind", ["faster_rcnn", "retinanet", "mask_rcnn"])
def test_detectors_train_and_evaluate_with_every_family(kind, name):
    images, targets = boxes_detection(2, masks=kind == "mask_rcnn")
    model = detector(kind, name, **tiny_config(name)).train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.body.parameters())
    with torch.no_grad():
        out = model.eval()(images)
    assert len(out) == 2 and {"boxes", "labels", "scores"} <= set(out[0])
    if kind == "mask_rcnn":
        assert out[0]["masks"].shape[1:] == (1, 96, 96)


@pytest.mark.parametrize("name", ["litv2_s", "volo_d1"])
def test_faster_rcnn_learns_boxes(name):
    """A short training run: mAP@0.5 (torchmetrics, COCO protocol) on held-out images rises well above untrained."""
    from torchmetrics.detection import MeanAveragePrecision

    def map50(model, images, targets):
        metric = MeanAveragePrecision()
        with torch.no_grad():
            metric.update(model.eval()(images), targets)
        return float(metric.compute()["map_50"])

    torch.manual_seed(0)
    train_x, train_t = boxes_detection(200, seed=1)
    val_x, val_t = boxes_detection(40, seed=2)
    model = detector("faster_rcnn", name, **tiny_config(name))
    before = map50(model, val_x, val_t)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        idx = torch.randint(0, len(train_x), (4,), generator=g).tolist()
        loss = sum(model.train()([train_x[i] for i in idx], [train_t[i] for i in idx]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = map50(model, val_x, val_t)
    print(f"{name}: held-out mAP@0.5 {before:.3f} untrained -> {after:.3f} after 60 steps")
    assert after > 0.5 and after > before + 0.4, (before, after)


def test_readme_dense_recipes_run_as_written():
    from test_readme import INTEGRATIONS

    dense = [code for code in INTEGRATIONS if "smp." in code or "fpn_backbone" in code or "mmpretrain" in code]
    assert len(dense) == 3
    for code in dense:
        exec(compile(code, "README.md", "exec"), {})


def test_readme_mmdet_config_backbone_builds():
    """The backbone (and the FPN's in_channels) of the README's mmdet config, through mmpretrain's registry."""
    pytest.importorskip("mmpretrain")
    from mmengine.utils import import_modules_from_strings
    from mmpretrain.registry import MODELS
    from test_readme import INTEGRATIONS

    config = {}
    exec(compile(next(c for c in INTEGRATIONS if "mmpretrain" in c), "README.md", "exec"), config)
    import_modules_from_strings(**config["custom_imports"])
    backbone_cfg = dict(config["model"]["backbone"], type="TIMMBackbone")
    backbone = MODELS.build(backbone_cfg)
    backbone.eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 128, 96))
    assert [f.shape[1] for f in feats] == config["model"]["neck"]["in_channels"]


# ---- OpenMMLab: mmpretrain's TIMMBackbone ------------------------------------------------------------------------
@pytest.mark.parametrize("name", SMALLEST)
def test_mmpretrain_timm_backbone(name):
    pytest.importorskip("mmpretrain")
    from mmengine.config import Config
    from mmengine.utils import import_modules_from_strings
    from mmpretrain.registry import MODELS

    width = visattn.create_model(name, **tiny_config(name)).num_features
    cfg = Config(dict(
        custom_imports=dict(imports=["visattn.integrations.timm"], allow_failed_imports=False),
        backbone=dict(type="mmpretrain.TIMMBackbone", model_name=f"visattn_{name}", features_only=True,
                      pretrained=False, **tiny_config(name)),
        classifier=dict(type="mmpretrain.ImageClassifier",
                        backbone=dict(type="mmpretrain.TIMMBackbone", model_name=f"visattn_{name}", num_classes=0,
                                      pretrained=False, **tiny_config(name)),
                        neck=None, head=dict(type="mmpretrain.LinearClsHead", num_classes=5, in_channels=width))))
    import_modules_from_strings(**cfg.custom_imports)
    backbone = MODELS.build(cfg.backbone)
    backbone.eval()  # (mmpretrain's TIMMBackbone.train returns None: no chaining)
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 96, 64))
    assert [tuple(f.shape[2:]) for f in feats] == [(24, 16), (12, 8), (6, 4), (3, 2)]
    classifier = MODELS.build(cfg.classifier)
    assert classifier(torch.randn(2, 3, 64, 64)).shape == (2, 5)

"""visattn blocks in Ultralytics YOLO YAMLs: built at two scales, trained for an epoch on a generated data set,
validated, exported by YOLO's own ONNX exporter and run by onnxruntime."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration  # run in the second environment that .ci/run builds

pytest.importorskip("ultralytics")
Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")

from ultralytics import YOLO  # noqa: E402

import visattn  # noqa: E402
import visattn.integrations.ultralytics as vyolo  # noqa: E402

YAML = Path(__file__).resolve().parents[2] / "examples" / "yolo" / "yolo8-visattn.yaml"


def yolo(scale: str) -> YOLO:
    return vyolo.yolo(YAML, scale)


def test_layers_take_their_channels_from_the_input_at_every_scale():
    widths = {}
    for scale in ("n", "s"):
        model = yolo(scale).model.eval()
        layers = [m for m in model.model if isinstance(m, vyolo.YOLOAttention)]
        assert [type(m).__name__ for m in layers] == ["HiLo", "MSDA"]
        widths[scale] = [m.block.dim for m in layers]
        with torch.no_grad():
            out = model(torch.randn(1, 3, 96, 128))
        assert torch.isfinite(out[0]).all()
    assert widths == {"n": [256, 64], "s": [512, 128]}


def test_layers_are_residual_blocks_with_official_arguments():
    layer = vyolo.MSDA(4, 3, [1, 3])
    x = torch.randn(2, 48, 9, 7)
    y = layer(x)
    assert layer.block.num_heads == 4 and layer.block.dilation == (1, 3)
    torch.testing.assert_close(y, x + layer.block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    assert vyolo.auto_heads(80, multiple=2) == 2 and vyolo.auto_heads(256) == 8 and vyolo.auto_heads(24) == 1
    assert vyolo.HiLo().heads_for(320) == 10
    vyolo.register()  # idempotent


def make_dataset(root: Path, n_train: int = 16, n_val: int = 8, size: int = 64) -> Path:
    """Rectangles (class 0) and discs (class 1) on noise, with YOLO-format labels."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            img = Image.fromarray((torch.rand(size, size, 3, generator=g) * 60).to(torch.uint8).numpy())
            draw = ImageDraw.Draw(img)
            lines = []
            for _ in range(2):
                cls = int(torch.randint(0, 2, (1,), generator=g))
                w, h = (int(v) for v in torch.randint(12, 28, (2,), generator=g))
                x0, y0 = (int(v) for v in torch.randint(0, size - 28, (2,), generator=g))
                box = (x0, y0, x0 + w, y0 + h)
                (draw.rectangle if cls == 0 else draw.ellipse)(box, fill=(220, 200 * cls, 90))
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            img.save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: box\n  1: disc\n")
    return data


def test_train_val_and_yolo_onnx_export(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    data = make_dataset(tmp_path / "shapes")
    model = yolo("n")
    model.train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", amp=False, plots=False,
                project=str(tmp_path / "runs"), name="train", exist_ok=True, verbose=False)
    metrics = model.val(data=str(data), imgsz=64, batch=4, device="cpu", plots=False, workers=0,
                        project=str(tmp_path / "runs"), name="val", exist_ok=True)
    assert 0.0 <= metrics.box.map50 <= 1.0
    trained = [m for m in model.model.model if isinstance(m, vyolo.YOLOAttention)]
    assert all(m.block is not None for m in trained)
    path = Path(model.export(format="onnx", imgsz=64, device="cpu"))
    assert path.is_file()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 64, 64)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    net = model.model.eval()
    with torch.no_grad():
        expected = net(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_yolo_flops_count_the_attention_products():
    """YOLO's summary (thop) now includes the visattn layers' projections and attention products: exactly
    2 x count_macs here (tests/integration/test_yolo_wirings.py checks every block and wiring within 2 %)."""
    import copy

    from ultralytics.utils.torch_utils import get_flops

    model = yolo("n").model.eval()
    stripped = copy.deepcopy(model)
    for layer in stripped.model:
        if isinstance(layer, vyolo.YOLOAttention):
            layer.forward = lambda x: x
    booked = get_flops(model, 640) - get_flops(stripped, 640)  # GFLOPs YOLO gives the two layers
    exact = 2 * (visattn.count_macs(model.model[10].block, torch.randn(1, 20, 20, 256)).total +
                 visattn.count_macs(model.model[17].block, torch.randn(1, 80, 80, 64)).total) / 1e9
    assert abs(booked - exact) <= 0.02 * exact, (booked, exact)


def test_head_count_for_channels_that_no_count_divides():
    assert vyolo.auto_heads(33) == 1
    with pytest.raises(ValueError, match="no head count divides 33 channels and is a multiple of 2"):
        vyolo.auto_heads(33, multiple=2)


def test_scaled_yaml_names_the_scale_and_keeps_odd_folders(tmp_path):
    folder = tmp_path / "x10m0s" / "exp2s"  # folders Ultralytics' scale regex would rewrite
    folder.mkdir(parents=True)
    source = folder / "yolo8-visattn.yaml"
    source.write_text(YAML.read_text())
    path = vyolo.scaled_yaml(source, "s", folder=folder)
    assert path.name == "yolo8s-visattn.yaml" and path.parent == folder
    model = YOLO(str(path))
    assert model.model.yaml["scale"] == "s"
    with pytest.raises(ValueError, match="scale must be one of"):
        vyolo.scaled_yaml(source, "q")

"""visattn in YOLO the three ways YOLO users wire attention, each with every block (or family): standalone layers,
CSP blocks with the attention inside (C2f_<Block>, C3k2_<Block>), and a visattn backbone (VisattnBackbone + Index).
Built at scales n and s, trained for an epoch on a generated shapes set, validated, exported by YOLO's own ONNX
exporter and run by onnxruntime; GFLOPs as YOLO prints them against count_macs; float16 forwards."""

import copy
import re
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration  # run in the second environment that .ci/run builds

pytest.importorskip("ultralytics")
yaml = pytest.importorskip("yaml")

from test_ultralytics import make_dataset  # noqa: E402
from tiny_models import tiny_config  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.utils.torch_utils import get_flops  # noqa: E402

import visattn  # noqa: E402
import visattn.integrations.ultralytics as vyolo  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "yolo"
BLOCKS = ["HiLo", "MSDA", "Outlook", "CloAttn"]
FAMILIES = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]


def write_yaml(folder: Path, scale: str, wiring: str, which: str) -> Path:
    """One of the example YAMLs with every visattn row set to ``which`` (a block, or a family for the backbone),
    written as yolo11<scale>-... / yolo8<scale>-... so that Ultralytics reads the scale from the name as it is."""
    if wiring == "layer":
        cfg = yaml.safe_load((EXAMPLES / "yolo8-visattn.yaml").read_text())
        rows = cfg["backbone"] + cfg["head"]
        for row in rows:
            if row[2] in BLOCKS:
                row[2], row[3] = which, []
        name = f"yolo8{scale}-layer-{which}.yaml"
    elif wiring == "c2f":  # YOLOv8's C2f with the block inside, at P5 and on the stride-8 output
        cfg = yaml.safe_load((EXAMPLES / "yolo8-visattn.yaml").read_text())
        rows = cfg["backbone"] + cfg["head"]
        for row in rows:
            if row[2] in BLOCKS:  # the standalone rows become identities (the row numbers stay)
                row[2], row[3] = "nn.Identity", []
        rows[8][2] = rows[16][2] = f"C2f_{which}"
        name = f"yolo8{scale}-c2f-{which}.yaml"
    elif wiring == "c3k2":
        text = (EXAMPLES / "yolo11-visattn-csp.yaml").read_text()
        text = re.sub(r"C3k2_(HiLo|MSDA)", f"C3k2_{which}", text)
        cfg = yaml.safe_load(text)
        name = f"yolo11{scale}-c3k2-{which}.yaml"
    else:  # backbone
        cfg = yaml.safe_load((EXAMPLES / "yolo11-visattn-backbone.yaml").read_text())
        channels = [i["num_chs"] for i in
                    visattn.create_model(which, features_only=True, out_indices=(1, 2, 3), **tiny_config(which))
                    .feature_info]
        cfg["backbone"][0][3] = [channels[-1], which, None, [1, 2, 3], tiny_config(which)]
        for j in range(3):
            cfg["backbone"][1 + j][3] = [channels[j], j]
        name = f"yolo11{scale}-backbone-{which}.yaml"
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def visattn_layers(net):
    """The visattn modules of a YOLO network: standalone layers, the layers inside CSP blocks, the backbone."""
    return [m for m in net.modules() if isinstance(m, (vyolo.YOLOAttention, vyolo.VisattnBackbone))]


CASES = ([("layer", b) for b in BLOCKS] + [("c2f", b) for b in BLOCKS] + [("c3k2", b) for b in BLOCKS]
         + [("backbone", f) for f in FAMILIES])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("shapes"))


@pytest.mark.parametrize("wiring,which", CASES, ids=[f"{w}-{b}" for w, b in CASES])
def test_wiring_builds_trains_validates_and_exports(wiring, which, tmp_path, shapes):
    ort = pytest.importorskip("onnxruntime")
    widths = {}
    for scale in ("n", "s"):
        model = YOLO(str(write_yaml(tmp_path, scale, wiring, which)))
        net = model.model.eval()
        with torch.no_grad():
            out = net(torch.rand(1, 3, 96, 128))
        assert torch.isfinite(out[0]).all()
        layers = visattn_layers(net)
        assert layers and all(sum(p.numel() for p in m.parameters()) > 0 for m in layers)
        widths[scale] = sum(p.numel() for p in net.parameters())
    assert widths["s"] > widths["n"]  # the scale reached the rows (the backbone keeps its width)
    model = YOLO(str(write_yaml(tmp_path, "n", wiring, which)))
    model.train(data=str(shapes), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", amp=False, plots=False,
                project=str(tmp_path / "runs"), name="train", exist_ok=True, verbose=False)
    metrics = model.val(data=str(shapes), imgsz=64, batch=4, device="cpu", plots=False, workers=0,
                        project=str(tmp_path / "runs"), name="val", exist_ok=True)
    assert 0.0 <= metrics.box.map50 <= 1.0
    path = Path(model.export(format="onnx", imgsz=64, device="cpu"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(1, 3, 64, 64)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        expected = model.model.eval()(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def stripped_gflops(net, imgsz: int) -> float:
    """GFLOPs YOLO prints for ``net`` with every visattn attention layer made an identity (backbones stay)."""
    copy_ = copy.deepcopy(net)
    for m in copy_.modules():
        if isinstance(m, vyolo.YOLOAttention):
            m.forward = lambda x: x
    return get_flops(copy_, imgsz)


def layer_inputs(net, imgsz):
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.__setitem__(mod, args[0]))
             for m in visattn_layers(net)]
    with torch.no_grad():
        net(torch.zeros(1, 3, imgsz, imgsz))
    for h in hooks:
        h.remove()
    return inputs


@pytest.mark.parametrize("wiring,which", [("layer", b) for b in BLOCKS] + [("c3k2", b) for b in BLOCKS]
                         + [("backbone", f) for f in FAMILIES])
def test_yolo_gflops_count_the_attention_products(wiring, which, tmp_path):
    """What YOLO prints for the visattn layers (the model's GFLOPs minus those of the same model without them) is
    within 2 % of 2 x count_macs of those layers. A backbone: thop on the layer itself, as YOLO's profile runs it,
    with thop's normalisation rules set aside (thop books LayerNorm / BatchNorm / GroupNorm arithmetic, which
    count_macs and the papers leave out: 1-3 % of these backbones)."""
    import thop
    from thop.profile import zero_ops
    from torch import nn

    imgsz = 320
    net = YOLO(str(write_yaml(tmp_path, "n", wiring, which))).model.eval()
    inputs = layer_inputs(net, imgsz)
    if wiring == "backbone":
        layer = next(m for m in inputs if isinstance(m, vyolo.VisattnBackbone))
        norms = {t: zero_ops for t in (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)}
        booked = 2 * thop.profile(copy.deepcopy(layer), inputs=[inputs[layer]], custom_ops=norms,
                                  verbose=False)[0] / 1e9
        exact = 2 * visattn.count_macs(layer.m, inputs[layer]).total / 1e9
    else:
        booked = get_flops(net, imgsz) - stripped_gflops(net, imgsz)
        exact = 2 * sum(visattn.count_macs(m.block, x.permute(0, 2, 3, 1)).total for m, x in inputs.items()) / 1e9
    assert abs(booked - exact) <= 0.02 * exact, (booked, exact)


@pytest.mark.parametrize("wiring,which", [("layer", b) for b in BLOCKS] + [("c3k2", b) for b in BLOCKS]
                         + [("backbone", f) for f in FAMILIES])
def test_visattn_layers_run_in_float16_on_unnormalised_features(wiring, which, tmp_path):
    """Ultralytics validates in half precision on GPUs only; on the CPU the layers' own forward in float16, on
    their real inputs scaled x100 (YOLO feeds attention un-normalised features)."""
    net = YOLO(str(write_yaml(tmp_path, "n", wiring, which))).model.eval()
    for layer, x in layer_inputs(net, 96).items():
        x = (torch.randn_like(x) * 100).half()
        with torch.no_grad():
            out = copy.deepcopy(layer).half()(x)
        for y in out if isinstance(out, list) else [out]:
            assert y.dtype == torch.float16 and torch.isfinite(y).all(), type(layer).__name__

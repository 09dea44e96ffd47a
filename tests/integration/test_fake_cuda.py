"""GPU readiness without a GPU: every block, family, YOLO layer and timm feature extractor runs on fake CUDA tensors,
and every block and family exports (torch.export, named Dim ranges) from fake CUDA tensors.

In the CUDA build of torch (the integration environment), ``FakeTensorMode`` makes tensors on device ``"cuda"``
with no GPU present. Parameters and input are fake CUDA tensors, passed through ``torch.func.functional_call``: a
tensor created on the wrong device fails the first op that mixes devices, a data-dependent host synchronisation
(``.item()``, ``bool(tensor)``, ``nonzero``) raises, and any warning (fake tensors warn on ``data_ptr()`` reads) is
an error here. Forward only: autograd needs a real device.
"""

import copy
import warnings

import pytest
import torch
from tiny_models import SMALLEST, tiny, tiny_config

pytestmark = pytest.mark.integration  # run in the second environment that .ci/run builds

if not torch.backends.cuda.is_built():
    pytest.skip("fake CUDA tensors need a CUDA build of torch", allow_module_level=True)

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import visattn  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def fake_cuda_forward(module: torch.nn.Module, shape, dtype: torch.dtype, train: bool = False):
    """``module(x)`` with every parameter, buffer and the input as fake CUDA tensors of ``dtype``; returns the
    output (fake) and the warnings raised."""
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}  # read outside the mode
    module.train(train)
    mode = FakeTensorMode()
    with mode:
        state = {k: torch.empty(v.shape, dtype=dtype if v.is_floating_point() else v.dtype, device="cuda")
                 for k, v in named.items()}
        x = torch.empty(shape, dtype=dtype, device="cuda")
    with warnings.catch_warnings(record=True) as caught, mode:
        warnings.simplefilter("always")
        with torch.no_grad():
            out = torch.func.functional_call(module, state, (x,))
    return out, [str(w.message) for w in caught]


def check(out, shape, dtype, caught):
    outs = out if isinstance(out, (list, tuple)) else [out]
    assert not caught, caught
    for y in outs:
        assert y.device.type == "cuda" and y.dtype == dtype, (y.device, y.dtype)
    if shape is not None:
        assert tuple(outs[0].shape) == shape


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("name", visattn.list_blocks())
def test_every_block_on_fake_cuda(name, impl, dtype):
    block = visattn.create_block(name, 32, 4, impl=impl)
    for train in (False, True):
        out, caught = fake_cuda_forward(block, (2, 13, 11, 32), dtype, train)
        check(out, (2, 13, 11, 32), dtype, caught)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("path", ["fast", "reference", "fused"])
@pytest.mark.parametrize("name", SMALLEST)
def test_every_family_on_fake_cuda(name, path, dtype):
    model = tiny(name, impl="fast" if path == "fused" else path)
    if path == "fused":
        model = visattn.fuse(model)
    for train in ((False,) if path == "fused" else (False, True)):
        out, caught = fake_cuda_forward(model, (2, 3, 64, 96), dtype, train)
        check(out, (2, 10), dtype, caught)


@pytest.mark.parametrize("name", SMALLEST)
def test_feature_extractors_on_fake_cuda(name):
    timm = pytest.importorskip("timm")
    import visattn.integrations.timm  # noqa: F401

    for model in (visattn.create_model(name, features_only=True, **tiny_config(name)),
                  timm.create_model(f"visattn_{name}", features_only=True, **tiny_config(name))):
        out, caught = fake_cuda_forward(model, (1, 3, 64, 96), torch.float16)
        check(out, None, torch.float16, caught)
        assert [tuple(f.shape[2:]) for f in out] == [(16, 24), (8, 12), (4, 6), (2, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_yolo_layers_on_fake_cuda(dtype):
    pytest.importorskip("ultralytics")
    import visattn.integrations.ultralytics as vyolo

    layers = [cls().build_for(64) for cls in (vyolo.HiLo, vyolo.MSDA, vyolo.Outlook, vyolo.CloAttn)]
    layers += [vyolo.C3k2_HiLo(64, 64, 1, False, 0.5), vyolo.C2f_CloAttn(64, 128, 1, True)]
    for layer in layers:
        out, caught = fake_cuda_forward(layer, (2, 64, 20, 24), dtype)
        check(out, None, dtype, caught)
    backbone = vyolo.VisattnBackbone("cloformer_xxs", overrides=tiny_config("cloformer_xxs"))
    out, caught = fake_cuda_forward(backbone, (1, 3, 64, 64), dtype)
    check(out, None, dtype, caught)


def test_a_host_sync_is_caught():
    """The harness itself: a module that reads a value on the host fails here."""
    class Syncs(torch.nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # .item()-like host read

    with pytest.raises(Exception, match="data-dependent|DataDependent|_local_scalar_dense"):
        fake_cuda_forward(Syncs(), (2, 3), torch.float32)


def test_copies_of_models_keep_running():
    model = copy.deepcopy(tiny("volo_d1"))
    out, caught = fake_cuda_forward(model, (1, 3, 64, 64), torch.bfloat16)
    check(out, (1, 10), torch.bfloat16, caught)


def fake_cuda_export(module: torch.nn.Module, shape, dims):
    """``torch.export`` with named ``Dim`` ranges of ``module`` whose parameters, buffers and input are fake CUDA
    tensors: the branches that only run while traced (padding counts, pooling kernels, DCN offsets) are recorded on
    CUDA. Returns the output's fake value and the warnings raised."""
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    module.eval()
    with FakeTensorMode():
        state = {k: torch.empty(v.shape, dtype=v.dtype, device="cuda") for k, v in named.items()}
        x = torch.empty(shape, device="cuda")

    class OnState(torch.nn.Module):
        def forward(self, x):
            return torch.func.functional_call(module, state, (x,))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = torch.export.export(OnState(), (x,), dynamic_shapes=(dims,))
    output = next(n for n in program.graph.nodes if n.op == "output").args[0][0]
    return output.meta["val"], [str(w.message) for w in caught]


def test_named_dim_exports_of_blocks_on_fake_cuda():
    from torch.export import Dim

    dims = {0: Dim("b", min=1, max=16), 1: Dim("h", min=16, max=128), 2: Dim("w", min=16, max=128)}
    for name in visattn.list_blocks():
        out, caught = fake_cuda_export(visattn.create_block(name, 32, 4), (2, 20, 24, 32), dims)
        assert out.device.type == "cuda" and out.shape[-1] == 32 and not caught, (name, caught)


@pytest.mark.parametrize("name", SMALLEST)
def test_named_dim_exports_of_families_on_fake_cuda(name):
    from torch.export import Dim

    dims = {0: Dim("b", min=1, max=8), 2: Dim("h", min=64, max=512), 3: Dim("w", min=64, max=512)}
    out, caught = fake_cuda_export(tiny(name), (2, 3, 96, 128), dims)
    assert out.device.type == "cuda" and out.shape[-1] == 10 and not caught, caught


def test_a_tensor_on_the_wrong_device_is_caught_in_an_export():
    """The harness itself: a traced branch that makes a CPU tensor fails here."""
    from torch.export import Dim

    class MakesCpu(torch.nn.Module):
        def forward(self, x):
            return x + torch.ones(x.shape[-1])  # on the CPU

    with pytest.raises(RuntimeError, match="not on the expected device"):
        fake_cuda_export(MakesCpu(), (2, 20, 8), {0: Dim("b", min=1, max=16)})

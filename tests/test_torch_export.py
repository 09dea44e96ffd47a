"""torch.export with dynamic shapes, as ExecuTorch / AOTInductor / torch-TensorRT users write them: named ``Dim``s with
ranges on batch, height and width, and ``Dim.AUTO``. The exported program is run at sizes other than the example and
compared with eager.

Every block and family exports with named ranges. Windowed blocks (HiLo, window attention, CloAttention's pooled
group) need ranges that keep a side at least one window long (``Dim("h", min=ws)``); below that torch.export
specialises the one-window case and names the range to use instead."""

import pytest
import torch
from tiny_models import tiny
from torch.export import Dim

import visattn

BLOCKS = visattn.list_blocks() + ["outlook_s2"]  # every registered block, and outlook with stride 2


def block(name):
    torch.manual_seed(0)
    if name == "outlook_s2":
        return visattn.create_block("outlook", 32, 4, stride=2).eval()
    return visattn.create_block(name, 32, 4).eval()


def max_rank(program) -> int:
    """The largest rank of any tensor the exported graph makes (XNNPACK, ExecuTorch's CPU delegate, takes <= 6)."""
    vals = [n.meta.get("val") for n in program.graph.nodes]
    return max(v.dim() for v in vals if isinstance(v, torch.Tensor))


def export_and_compare(module, example, dims, others, tol=1e-4):
    program = torch.export.export(module, (example,), dynamic_shapes=(dims,))
    assert max_rank(program) <= 6  # HiLo's window partition was 7-D: the .pte failed to load on XNNPACK
    for x in others:
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), module(x), rtol=tol, atol=tol)


def named_block_dims():
    return {0: Dim("b", min=1, max=16), 1: Dim("h", min=16, max=128), 2: Dim("w", min=16, max=128)}


@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_export_with_named_dims(name):
    export_and_compare(block(name), torch.randn(2, 20, 24, 32), named_block_dims(),
                       [torch.randn(1, 17, 31, 32), torch.randn(3, 64, 40, 32)])


@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_export_with_auto_dims(name):
    """Dim.AUTO ranges start at 2 for some (torch.export's 0/1 specialisation): batch 1 needs an export of its own."""
    export_and_compare(block(name), torch.randn(2, 20, 24, 32), {0: Dim.AUTO, 1: Dim.AUTO, 2: Dim.AUTO},
                       [torch.randn(2, 17, 31, 32), torch.randn(3, 33, 9, 32)])


@pytest.mark.parametrize("name", ["dilateformer_tiny", "volo_d1", "litv2_s", "cloformer_xxs"])
def test_families_export_with_named_dims(name):
    dims = {0: Dim("b", min=1, max=8), 2: Dim("h", min=64, max=512), 3: Dim("w", min=64, max=512)}
    export_and_compare(tiny(name).eval(), torch.randn(2, 3, 96, 128), dims,
                       [torch.randn(1, 3, 64, 80), torch.randn(3, 3, 130, 97)])


@pytest.mark.slow  # ~30 s: the named-Dim family tests above run by default
@pytest.mark.parametrize("name", ["litv2_s", "cloformer_xxs"])
def test_families_export_with_auto_dims(name):
    """Dim.AUTO ranges start at 2 for these two (a reshape's guard excludes batch 1: export at batch 1 to serve it)."""
    export_and_compare(tiny(name).eval(), torch.randn(2, 3, 96, 128), {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},
                       [torch.randn(2, 3, 64, 80), torch.randn(3, 3, 130, 97)])


def test_round_up_is_the_next_multiple():
    from visattn._modes import round_up

    assert [round_up(n, 4) for n in range(10)] == [0, 4, 4, 4, 4, 8, 8, 8, 8, 12]
    assert round_up(7, 1) == 7


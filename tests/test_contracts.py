"""PyTorch's module contracts hold for every block and family: the nn.Linear / nn.Conv2d layers a block owns behave
as modules (forward hooks fire, a wrapper or LoRA adapter put in their place is used, dynamic quantization,
pruning and parametrizations take effect), and the results equal those of the plain layers."""

import copy

import pytest
import torch
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as prune
from tiny_models import SMALLEST, tiny
from torch import nn

import visattn

LAYERS = (nn.Linear, nn.Conv2d)


def subjects():
    """(id, module, input) for every registered block (both paths) and every family's smallest variant."""
    out = []
    for name in visattn.list_blocks():
        for impl in ("fast", "reference"):
            torch.manual_seed(0)
            out.append((f"{name}-{impl}", lambda name=name, impl=impl: visattn.create_block(name, 16, 4, impl=impl),
                        (2, 9, 11, 16)))
    for name in SMALLEST:
        out.append((name, lambda name=name: tiny(name), (2, 3, 64, 48)))
    return out


SUBJECTS = subjects()


def build(factory, shape):
    torch.manual_seed(0)
    module = factory().eval()
    return module, torch.randn(shape)


def replace_layers(module: nn.Module, wrap) -> list[nn.Module]:
    """Put ``wrap(layer)`` in place of every Linear / Conv2d (found before replacing); returns the wrappers."""
    targets = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
               if type(child) in LAYERS]
    wrappers = []
    for parent, name, child in targets:
        wrapper = wrap(child)
        setattr(parent, name, wrapper)
        wrappers.append(wrapper)
    return wrappers


class Counting(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer, self.calls = layer, 0

    def forward(self, x):
        self.calls += 1
        return self.layer(x)


class LoRA(nn.Module):
    """A LoRA-style adapter (as PEFT builds them): ``layer(x) + B(A(x))`` with a rank-2 update."""

    def __init__(self, layer):
        super().__init__()
        self.base = layer
        conv = isinstance(layer, nn.Conv2d)
        cin, cout = (layer.in_channels, layer.out_channels) if conv else (layer.in_features, layer.out_features)
        groups = layer.groups if conv else 1
        if conv:
            self.A = nn.Conv2d(cin, 2 * groups, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                               groups=groups, bias=False)
            self.B = nn.Conv2d(2 * groups, cout, 1, groups=groups, bias=False)
        else:
            self.A, self.B = nn.Linear(cin, 2, bias=False), nn.Linear(2, cout, bias=False)
        nn.init.normal_(self.B.weight, std=0.05)

    def forward(self, x):
        return self.base(x) + self.B(self.A(x))

    def merged(self) -> nn.Module:
        """The plain layer with the update merged into its weight (what the adapter computes)."""
        layer = copy.deepcopy(self.base)
        with torch.no_grad():
            if isinstance(layer, nn.Conv2d):
                g, k = layer.groups, layer.kernel_size
                a = self.A.weight.view(g, 2, -1)  # (g, 2, cin/g * kh * kw)
                b = self.B.weight.view(g, -1, 2)  # (g, cout/g, 2)
                layer.weight += torch.bmm(b, a).view(layer.out_channels, -1, *k)
            else:
                layer.weight += self.B.weight @ self.A.weight
        return layer


@pytest.mark.parametrize("ident,factory,shape", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_forward_hooks_fire_on_every_layer(ident, factory, shape):
    module, x = build(factory, shape)
    with torch.no_grad():
        expected = module(x)
    seen = {}
    for name, m in module.named_modules():
        if type(m) in LAYERS:
            m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.shape))
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    layers = [n for n, m in module.named_modules() if type(m) in LAYERS]
    assert sorted(seen) == sorted(layers)


@pytest.mark.parametrize("ident,factory,shape", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_wrappers_in_place_of_layers_are_called(ident, factory, shape):
    module, x = build(factory, shape)
    with torch.no_grad():
        expected = module(x)
    wrappers = replace_layers(module, Counting)
    assert wrappers
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-5)
    assert all(w.calls >= 1 for w in wrappers)


@pytest.mark.parametrize("ident,factory,shape", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_lora_adapters_take_effect(ident, factory, shape):
    module, x = build(factory, shape)
    merged = copy.deepcopy(module)
    adapters = replace_layers(module, LoRA)
    for name, adapter in [(n, m) for n, m in module.named_modules() if isinstance(m, LoRA)]:
        parent, _, attr = name.rpartition(".")
        setattr(merged.get_submodule(parent) if parent else merged, attr, adapter.merged())
    with torch.no_grad():
        torch.testing.assert_close(module(x), merged(x), rtol=1e-4, atol=1e-4)
    for p in module.parameters():
        p.requires_grad_(False)
    for a in adapters:
        a.A.weight.requires_grad_(True)
        a.B.weight.requires_grad_(True)
    module.train()(x).square().mean().backward()  # only the adapters train
    assert all(a.B.weight.grad is not None for a in adapters)


@pytest.mark.parametrize("ident,factory,shape", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_pruning_masks_apply_and_training_runs(ident, factory, shape):
    module, x = build(factory, shape)
    masked = copy.deepcopy(module)
    for m in module.modules():
        if type(m) in LAYERS:
            prune.l1_unstructured(m, "weight", amount=0.3)
    for m, p in zip(masked.modules(), module.modules(), strict=True):
        if type(m) in LAYERS:
            with torch.no_grad():
                m.weight.mul_(p.weight_mask)
    with torch.no_grad():
        torch.testing.assert_close(module(x), masked(x), rtol=1e-5, atol=1e-5)
    opt = torch.optim.SGD(module.parameters(), 0.01)
    module.train()(x).square().mean().backward()
    opt.step()
    with torch.no_grad():  # the mask holds after the step
        assert all((m.weight[m.weight_mask == 0] == 0).all() for m in module.modules() if type(m) in LAYERS)


class Double(nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("ident,factory,shape", SUBJECTS, ids=[s[0] for s in SUBJECTS])
def test_parametrizations_apply(ident, factory, shape):
    module, x = build(factory, shape)
    doubled = copy.deepcopy(module)
    for m, d in list(zip(module.modules(), doubled.modules(), strict=True)):
        if type(m) in LAYERS:
            parametrize.register_parametrization(m, "weight", Double())
            with torch.no_grad():
                d.weight.mul_(2)
    with torch.no_grad():
        torch.testing.assert_close(module(x), doubled(x), rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao's own deprecation
@pytest.mark.parametrize("name", SMALLEST)
def test_dynamic_quantization_runs_every_family(name):
    model = tiny(name).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = model(x)
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
        got = quantized(x)
    assert any("quantized" in type(m).__module__ for m in quantized.modules())
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99

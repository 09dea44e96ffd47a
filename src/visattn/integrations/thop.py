"""visattn's attention kernels in thop's FLOP counts (``ultralytics-thop``, the counter behind the GFLOPs that
Ultralytics prints).

thop counts layers by module hooks and functional products (``F.linear``, ``bmm``, ``scaled_dot_product_attention``...)
through a ``TorchFunctionMode`` whose rules live in its ``functional_hooks`` table. visattn's own kernels (dilated
attention, outlook aggregation) compute their products in ways no such rule sees; each of them reports its MAC count
through :func:`visattn.functional._counting.kernel`, which is overridable like a torch function. ``import
visattn.integrations.thop`` (done by ``visattn.integrations.ultralytics``) adds one rule for it to that table: the
count the kernel reports (the same one :func:`visattn.count_macs` books). The layers a block owns are counted by
thop's own module rules: blocks call them as modules while hooks are attached (``visattn._modes.plain``).
"""

from __future__ import annotations

import importlib

from ..functional._counting import kernel

_thop_profile = importlib.import_module("thop.profile")  # the module (the package's `profile` is the function)


def _kernel_macs(args, kwargs, y) -> int:
    return int(args[1])  # kernel(name, macs, fn, *args)


def register() -> bool:
    """Add the rule (idempotent). Returns False for a thop without a functional-rule table (Lyken17's thop)."""
    table = getattr(_thop_profile, "functional_hooks", None)
    if table is None:
        return False
    table[kernel] = _kernel_macs
    return True


REGISTERED = register()

"""visattn's VOLO against timm's, same weights and outputs, one process, interleaved round-robin.

Run in the integration environment (torch with torchvision, timm):
    .venv-integration/bin/python benchmarks/timm_volo.py [--repeat 7] [--cases all]
Prints a markdown table: median ms of each implementation and timm / visattn (above 1: visattn is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

import visattn

CASES = {  # name: (visattn variant, timm variant, image size, batch, mode)
    "fwd-224-b1": ("volo_d1", "volo_d1_224", 224, 1, "fwd"),
    "fwd-224-b8": ("volo_d1", "volo_d1_224", 224, 8, "fwd"),
    "fwd-384-b1": ("volo_d1_384", "volo_d1_384", 384, 1, "fwd"),
    "fwd-448-b1": ("volo_d3_448", "volo_d3_448", 448, 1, "fwd"),
    "fwdbwd-224-b4": ("volo_d1", "volo_d1_224", 224, 4, "fwdbwd"),
    "fwdbwd-384-b1": ("volo_d1_384", "volo_d1_384", 384, 1, "fwdbwd"),
    "fwdbwd-448-b1": ("volo_d3_448", "volo_d3_448", 448, 1, "fwdbwd"),
}
# the one block that differs: VOLO-D1's outlook attention (192 channels, 6 heads, k 3, stride 2), batch 4
BLOCK_CASES = {"outlook-28-fwd": (28, "fwd"), "outlook-28-fwdbwd": (28, "fwdbwd"), "outlook-48-fwd": (48, "fwd"),
               "outlook-48-fwdbwd": (48, "fwdbwd")}


def step(model, x, mode):
    """One forward (inference mode) or forward + backward of a random output gradient."""
    if mode == "fwd":
        def run():
            with torch.inference_mode():
                model(x)
        return run
    grad = None

    def run():
        nonlocal grad
        for p in model.parameters():
            p.grad = None
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        grad = torch.randn_like(out) if grad is None else grad
        out.backward(grad)
    return run


def interleaved(runs: dict, repeat: int, warmup: int = 2) -> dict:
    """Median ms of each callable, timed round-robin."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times = {k: [] for k in runs}
    for _ in range(repeat):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def measure_block(case: str, repeat: int) -> dict:
    from timm.models.volo import OutlookAttention as TimmOutlook

    size, mode = BLOCK_CASES[case]
    torch.manual_seed(0)
    reference = TimmOutlook(192, 6, kernel_size=3, padding=1, stride=2)
    ours = visattn.OutlookAttention(192, 6, 3, 1, 2)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(4, size, size, 192, requires_grad=mode == "fwdbwd")
    with torch.no_grad():
        err = float((ours(x) - reference(x)).abs().max())
    med = interleaved({"visattn": step(ours, x, mode), "timm": step(reference, x, mode)}, repeat)
    return dict(case=case, visattn_ms=med["visattn"], timm_ms=med["timm"], ratio=med["timm"] / med["visattn"],
                max_abs_diff=err)


def measure(case: str, repeat: int, warmup: int = 2) -> dict:
    if case in BLOCK_CASES:
        return measure_block(case, repeat)
    ours_name, timm_name, size, batch, mode = CASES[case]
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, drop_path_rate=0.0)
    ours = visattn.create_model(ours_name, pretrained=reference.state_dict(), drop_path_rate=0.0)
    for m in (reference, ours):
        m.train(mode == "fwdbwd")
        for sub in m.modules():  # deterministic and comparable: no dropout, BatchNorm statistics frozen
            if isinstance(sub, (torch.nn.Dropout, torch.nn.BatchNorm2d)):
                sub.eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        a, b = ours.eval()(x[:1]), reference.eval()(x[:1])
    err = float((a - b).abs().max())
    for m in (reference, ours):
        m.train(mode == "fwdbwd")
        for sub in m.modules():
            if isinstance(sub, (torch.nn.Dropout, torch.nn.BatchNorm2d)):
                sub.eval()
    med = interleaved({"visattn": step(ours, x, mode), "timm": step(reference, x, mode)}, repeat, warmup)
    return dict(case=case, visattn_ms=med["visattn"], timm_ms=med["timm"], ratio=med["timm"] / med["visattn"],
                max_abs_diff=err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cases", default="all",
                        help=f"comma-separated from {', '.join([*CASES, *BLOCK_CASES])}; 'blocks' for the block cases")
    args = parser.parse_args()
    cases = {"all": list(CASES), "blocks": list(BLOCK_CASES)}.get(args.cases) or args.cases.split(",")
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.repeat} interleaved rounds\n")
    print("| case | visattn ms | timm ms | timm / visattn | max abs diff (logits) |")
    print("|---|---|---|---|---|")
    for case in cases:
        r = measure(case, args.repeat)
        print(f"| {r['case']} | {r['visattn_ms']:.1f} | {r['timm_ms']:.1f} | {r['ratio']:.2f} | "
              f"{r['max_abs_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()

"""Model shapes the benchmarks build with random weights (no download), and the GPU helpers they share.

conf/model/pythia-*.yaml name hub checkpoints (source=pretrained) and carry no shape, so the
Pythia shapes are written here from the Pythia paper (Biderman et al. 2023, Table 1), as
(n_layer, d_model, n_head); every other architecture detail is the one rlhf_scaling.models.tiny_config
builds for all tiny specs (GPT-NeoX, rotary on 25% of each head, parallel residual, MLP 4·d_model),
which is Pythia's. Pythia's vocabulary is 50,304 (padded from GPT-NeoX's 50,277 tokens).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

SHAPES = {
    "tiny-m": (2, 64, 4),  # conf/model/tiny-m.yaml (the CPU smoke shape)
    "pythia-160m": (12, 768, 12),
    "pythia-410m": (24, 1024, 16),
    "pythia-1.4b": (24, 2048, 16),
}
PYTHIA_VOCAB = 50304

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets, matched against
# torch.cuda.get_device_name(); MFU is also given against a measured bf16 matmul (measured_peak).
BF16_PEAK = [("H200", 989.4e12), ("H100 PCIe", 756.5e12), ("H100", 989.4e12), ("A100", 312e12), ("L40S", 362e12)]


def spec(shape: str, max_position: int) -> SimpleNamespace:
    """The ModelSpec fields tiny_config reads, for a named shape."""
    n_layer, d_model, n_head = SHAPES[shape]
    return SimpleNamespace(n_layer=n_layer, d_model=d_model, n_head=n_head, max_position=max_position)


def shape_overrides(shape: str) -> list:
    """Hydra overrides (without the role prefix) that give a tiny-m spec this shape."""
    n_layer, d_model, n_head = SHAPES[shape]
    return [f"n_layer={n_layer}", f"d_model={d_model}", f"n_head={n_head}"]


def datasheet_peak(device_name: str):
    """bf16 dense peak FLOP/s of a GPU by name, or None when it is not in the table (CPU too)."""
    return next((peak for key, peak in BF16_PEAK if key in device_name), None)


def sync(device) -> None:
    """Wait for queued GPU work, so a wall-clock interval covers it (a no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measured_peak(device, n: int = 8192, reps: int = 10) -> float:
    """Achieved FLOP/s of an n x n x n matmul (bf16 on CUDA, fp32 on CPU: what the device does best),
    the mean of `reps` products after 3 warm-ups: the practical ceiling MFU is read against."""
    import torch

    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)

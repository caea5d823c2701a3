"""FLOP and byte counts of prefill and decode from the model's architecture, and the device's peak rates.

Prefill of L tokens (causal attention, batch 1):
    2 * L * P_nonembedding          matmuls of every layer
  + 2 * L^2 * h_attn * layers       QK^T and AV over the causal half (2 matmuls x 2 FLOP x L^2/2)
  + 2 * h * vocab                   the LM head for the one position whose logits are kept
Decode step at context c:
    2 * P_nonembedding + 4 * c * h_attn * layers + 2 * h * vocab
    bytes: every weight once + the KV cache read (c * layers * 2 * kv_heads * head_dim * bytes_per_value)
"""

from __future__ import annotations

from ctxenergy.models import parameter_counts

# Dense (no sparsity) bf16 tensor-core peak and memory bandwidth from the vendors' datasheets, by NVML name substring.
# Order matters: the first matching key wins.
DEVICE_PEAKS = [
    ("H200", {"bf16_tflops": 989.0, "mem_tb_s": 4.8}),
    ("H100 NVL", {"bf16_tflops": 835.0, "mem_tb_s": 3.9}),
    ("H100 PCIe", {"bf16_tflops": 756.0, "mem_tb_s": 2.0}),
    ("H100", {"bf16_tflops": 989.0, "mem_tb_s": 3.35}),
    ("GH200", {"bf16_tflops": 989.0, "mem_tb_s": 4.0}),
    ("A100-SXM4-80GB", {"bf16_tflops": 312.0, "mem_tb_s": 2.039}),
    ("A100 80GB PCIe", {"bf16_tflops": 312.0, "mem_tb_s": 1.935}),
    ("A100", {"bf16_tflops": 312.0, "mem_tb_s": 1.555}),
    ("L40S", {"bf16_tflops": 362.0, "mem_tb_s": 0.864}),
    ("A10", {"bf16_tflops": 125.0, "mem_tb_s": 0.6}),
    ("B200", {"bf16_tflops": 2250.0, "mem_tb_s": 8.0}),
]


def device_peaks(device_name: str | None) -> dict | None:
    if not device_name:
        return None
    for key, peaks in DEVICE_PEAKS:
        if key.lower() in device_name.lower():
            return dict(peaks, source=f"datasheet:{key}")
    return None


def prefill_flops(arch: dict, length: int) -> float:
    p = parameter_counts(arch)
    h_attn = p["heads"] * p["head_dim"]
    return (
        2.0 * length * p["non_embedding"]
        + 2.0 * length**2 * h_attn * p["layers"]
        + 2.0 * p["hidden"] * arch["vocab_size"]
    )


def decode_step_flops(arch: dict, context: int) -> float:
    p = parameter_counts(arch)
    h_attn = p["heads"] * p["head_dim"]
    return 2.0 * p["non_embedding"] + 4.0 * context * h_attn * p["layers"] + 2.0 * p["hidden"] * arch["vocab_size"]


def decode_step_bytes(arch: dict, context: int, bytes_per_value: int = 2) -> float:
    p = parameter_counts(arch)
    kv = context * p["layers"] * 2 * p["kv_heads"] * p["head_dim"] * bytes_per_value
    return p["total"] * bytes_per_value + kv


def generate_flops(arch: dict, length: int, tokens: int) -> float:
    """A generate run: the prefill, then tokens-1 decode steps (the first token comes from the prefill)."""
    return prefill_flops(arch, length) + sum(decode_step_flops(arch, length + i) for i in range(tokens - 1))


def plausibility(
    achieved_tflops: float | None, device_name: str | None, measured_peak_tflops: float | None = None
) -> str | None:
    """A reason string when a prefill ran faster than the device can compute, else None."""
    if achieved_tflops is None:
        return None
    peaks = device_peaks(device_name)
    limit = max(filter(None, [peaks["bf16_tflops"] if peaks else None, measured_peak_tflops]), default=None)
    if limit is None:
        return None
    if achieved_tflops > limit:
        return (
            f"prefill ran at {achieved_tflops:.0f} TFLOP/s, above the device's peak of {limit:.0f} TFLOP/s: the prompt "
            "was not fully computed (a prefix cache reused earlier work?)"
        )
    return None

"""Which fused attention kernel torch chose for an engine's scaled-dot-product-attention calls, as a cell records it.

torch picks SDPA's kernel at every call, from a priority order that depends on its version, the GPU and the cuDNN it
loads: since 2.10 it puts cuDNN's attention first on Hopper and Blackwell where that cuDNN is newer than 9.15, as in
torch 2.11's CUDA 13 wheels (the environment variable TORCH_CUDNN_SDPA_DEPRIORITIZED=1 puts FlashAttention-2 first
again); older stacks ran FlashAttention-2 there. So "hf-sdpa" names different kernels on different software stacks,
and a comparison of two cells (`ctxenergy compare`) or of our numbers with a paper's needs to know which one ran.
torch's own chooser (`torch._fused_sdp_choice`) is asked with the very arguments of each call; it runs on the host
(microseconds), and only during a cell's first run after a reset (its warm-up, never a measured window).

`engine_options.hf.attention_kernel_order` sets the order instead (`kernel_order`), for an A/B of two kernels. vLLM
chooses its own attention backend at load; its engine records that (ctxenergy.engines.vllm.attention_backend).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

KERNELS = ("cudnn_attention", "flash_attention", "efficient_attention", "math")  # torch's SDPBackend names, lowercase


def kernel_order(names: tuple[str, ...] | list[str]):
    """A context in which torch tries SDPA's kernels in this order and no others (torch's sdpa_kernel with
    set_priority; the order is global to the process, so it holds in an engine's worker threads too)."""
    import inspect

    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ctxenergy.errors import ConfigError

    if "set_priority" not in inspect.signature(sdpa_kernel).parameters:
        import torch

        raise ConfigError(
            f"torch {torch.__version__} cannot order SDPA's kernels (engine_options.hf.attention_kernel_order): "
            "remove the setting or use a newer torch"
        )
    return sdpa_kernel([getattr(SDPBackend, name.upper()) for name in names], set_priority=True)


def _backend_name(choice: int) -> str:
    from torch.nn.attention import SDPBackend

    try:
        return SDPBackend(choice).name.lower()
    except ValueError:
        return f"backend {choice}"


class KernelNotes:
    """The kernels chosen for one cell's attention calls: 'decode' for calls of one query token (a batch-1 decode
    step), 'prefill' for longer queries (hf-paged packs a batch's decode steps into one call of B query tokens: those
    count as prefill-shaped)."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}
        self.noted = False

    @contextlib.contextmanager
    def noting_first_run(self) -> Iterator[None]:
        """Note the kernel of each SDPA call made inside, on the first run since this object was made only."""
        if self.noted:
            yield
            return
        self.noted = True
        import torch
        import torch.nn.functional as F

        original = F.scaled_dot_product_attention

        def noted(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            phase = "decode" if query.shape[-2] == 1 else "prefill"
            try:
                choice = torch._fused_sdp_choice(
                    query,
                    key,
                    value,
                    attn_mask=attn_mask,
                    dropout_p=dropout_p,
                    is_causal=is_causal,
                    scale=scale,
                    **kwargs,
                )
                name = _backend_name(int(choice))
            except Exception as exc:  # noqa: BLE001 - a note; the attention call itself must run as it would
                name = f"unknown ({type(exc).__name__})"
            self.seen.setdefault(phase, set()).add(name)
            return original(
                query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
            )

        # transformers looks the function up at each call (torch.nn.functional.scaled_dot_product_attention)
        F.scaled_dot_product_attention = noted
        try:
            yield
        finally:
            F.scaled_dot_product_attention = original

    def as_record(self) -> dict[str, str]:
        """{'prefill': 'cudnn_attention', 'decode': 'flash_attention'}; {} when no SDPA call ran (eager attention)."""
        return {phase: "+".join(sorted(names)) for phase, names in sorted(self.seen.items())}

"""Resolve a model entry of the config to its architecture, weights and tokenizer."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ctxenergy.config import model_config_path, read_model_config
from ctxenergy.engines.registry import ENGINES
from ctxenergy.errors import ConfigError
from ctxenergy.weights import shared_weights_dir, weights_label

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    config_path: Path
    arch: dict
    weights: str | None  # what the engines load; None: random weights built from `arch` by each engine
    tokenizer: str  # "auto", "bytes" or a directory
    tp: int = 1
    random_weights: str = "engine"  # how random weights are drawn (ctxenergy.weights); "shared" loads `weights`

    @property
    def max_positions(self) -> int | None:
        return self.arch.get("max_position_embeddings")

    def exceeds_context(self, length: int, n_out: int, engine: str) -> bool:
        """Whether a run of `length` prompt tokens and `n_out` output tokens cannot fit the model's positions. HF
        computes a prefill of exactly max positions (the new token needs no position of its own); vLLM refuses any
        request whose prompt plus output exceeds max_model_len."""
        allowance = 1 if (n_out == 1 and ENGINES[engine].prefill_fills_context) else 0
        return bool(self.max_positions) and length + n_out > self.max_positions + allowance

    @property
    def vocab_size(self) -> int:
        return int(self.arch["vocab_size"])

    @property
    def weights_label(self) -> str:
        return weights_label(self.random_weights, self.weights)

    @property
    def uniform_init(self) -> bool:
        """Random weights drawn as vLLM's dummy weights, whatever the engine."""
        return self.random_weights == "uniform" and not self.weights

    def with_engine_init(self) -> ModelSpec:
        """The same shape with the engine's own random initialisation (what shared weights are generated from)."""
        return replace(self, weights=None, random_weights="engine")


def resolve_model(settings: Settings, name: str) -> ModelSpec:
    entry = settings.model(name)
    weights = entry.weights
    if entry.random_weights == "shared" and not weights:
        weights = str(shared_weights_dir(settings, name))
    where = {"name": name, "config": entry.config}  # as config.py's helpers read a models[] entry
    return ModelSpec(
        name=name,
        config_path=model_config_path(where),
        arch=read_model_config(where),
        weights=weights,
        tokenizer=entry.tokenizer,
        tp=entry.tp,
        random_weights=entry.random_weights,
    )


class ByteTokenizer:
    """Deterministic fallback when no tokenizer of the model is available offline.

    Token id = UTF-8 byte value + 3 (ids 0-2 are left to special tokens), so the ids are valid for any
    vocabulary of at least 259 entries. Compute cost depends on the number of tokens, not on which ids
    they are, so a prompt of L fallback ids costs what L real tokens cost.
    """

    name = "bytes"
    OFFSET = 3

    def __init__(self, vocab_size: int):
        if vocab_size < 256 + self.OFFSET:
            raise ConfigError(f"the byte tokenizer needs a vocabulary of at least 259 ids, the model has {vocab_size}")

    def encode(self, text: str) -> list[int]:
        return [b + self.OFFSET for b in text.encode("utf-8")]


class HFTokenizer:
    """The model's own tokenizer, loaded from local files only."""

    def __init__(self, source: str):
        from transformers import AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        self.name = f"hf:{source}"

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))


def _tokenizer_source(spec: ModelSpec) -> str | None:
    if spec.tokenizer not in ("auto", "bytes"):
        return spec.tokenizer
    if spec.tokenizer == "bytes":
        return None
    candidates = [spec.config_path.parent]
    if spec.weights:
        candidates.insert(0, Path(spec.weights))
    for directory in candidates:
        if directory.is_dir() and any((directory / f).exists() for f in TOKENIZER_FILES):
            return str(directory)
    return None


def tokenizer_label(spec: ModelSpec) -> str:
    """The name load_tokenizer's tokenizer would carry, without loading it (a cell records which one made its
    prompt)."""
    source = _tokenizer_source(spec)
    return ByteTokenizer.name if source is None else f"hf:{source}"


def load_tokenizer(spec: ModelSpec):
    source = _tokenizer_source(spec)
    if source is None:
        return ByteTokenizer(spec.vocab_size)
    if spec.tokenizer not in ("auto", "bytes") and not Path(source).exists():
        raise ConfigError(f"model '{spec.name}': tokenizer directory '{source}' does not exist")
    return HFTokenizer(source)


def parameter_counts(arch: dict) -> dict[str, int]:
    """Parameters of a decoder-only transformer from its config: total, non-embedding (matmul work per token)."""
    h = arch["hidden_size"]
    layers = arch["num_hidden_layers"]
    heads = arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads", heads)
    head_dim = arch.get("head_dim") or h // heads
    inter = arch["intermediate_size"]
    vocab = arch["vocab_size"]
    attn = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
    if arch.get("attention_bias") or arch.get("model_type") == "qwen2":  # qwen2 has q/k/v biases
        attn += heads * head_dim + 2 * kv_heads * head_dim
    mlp = 3 * h * inter
    norms = 2 * h
    per_layer = attn + mlp + norms
    embed = vocab * h
    lm_head = 0 if arch.get("tie_word_embeddings") else vocab * h
    body = layers * per_layer + h
    return {
        "total": body + embed + lm_head,
        "non_embedding": layers * (attn + mlp),
        "lm_head": vocab * h,
        "layers": layers,
        "hidden": h,
        "head_dim": head_dim,
        "heads": heads,
        "kv_heads": kv_heads,
    }

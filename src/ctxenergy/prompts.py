"""Exact-length prompts as token ids: the base text tokenized, repeated and cut to L.

Prompts are passed to engines as ids, never as text, so their length is exact by construction
(decoding and re-encoding is not guaranteed to keep L). The warm-up prompt starts at a different
offset of the same token stream, so it shares no prefix with the measured prompt and an engine's
prefix cache cannot carry work from the warm-up into the measurement.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import replacing
from ctxenergy.paths import BASE_TEXT

# Offset of the warm-up prompt into the repeated token stream (a prime, so it never lines up with the text's period).
WARMUP_OFFSET = 7919


def exact_length_ids(base_ids: list[int] | np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    base = np.asarray(base_ids, dtype=np.int64)
    if base.size == 0:
        raise ValueError("the base text tokenized to no tokens")
    if length < 1:
        raise ValueError(f"prompt length must be a positive number of tokens, got {length}")
    reps = (offset + length) // base.size + 1
    return np.tile(base, reps)[offset : offset + length].copy()


def make_prompts(tokenizer, length: int, base_text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The measured prompt and the warm-up prompt, both exactly `length` ids, differing from the first token on."""
    text = base_text if base_text is not None else BASE_TEXT.read_text()
    base_ids = tokenizer.encode(text)
    measured = exact_length_ids(base_ids, length, 0)
    offset = WARMUP_OFFSET % len(base_ids)
    warmup = exact_length_ids(base_ids, length, offset)
    while warmup[0] == measured[0]:
        offset += 1
        warmup = exact_length_ids(base_ids, length, offset)
    return measured, warmup


def save_ids(ids: np.ndarray, path: str | Path) -> None:
    """Write atomically: a crash leaves either no file or the whole file."""
    data = io.BytesIO()  # NumPy's own write reports a full disk without an errno ("4096 requested and 112 written")
    np.save(data, np.asarray(ids, dtype=np.int64))
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data.getvalue())


def load_ids(path: str | Path) -> np.ndarray:
    return np.load(path)


def load_cell_prompts(length: int, prompt_file: str | Path, warmup_file: str | Path, vocab_size: int | None = None,
                      model: str = "the model") -> tuple[np.ndarray, np.ndarray]:
    """The measured and warm-up prompts of a cell of `length` tokens; a missing, unreadable or other-length file is
    one line naming it (a shorter warm-up leaves the windows that follow it colder and shorter than asked), and so
    are ids outside the model's vocabulary (`vocab_size`: the engine would fail on the GPU) and a warm-up that is
    the measured prompt (its prefill would be served from a prefix cache; the one deliberate case,
    engine_options.vllm.warmup_same_prompt, uses no file for it)."""
    loaded = []
    for what, path in (("prompt", prompt_file), ("warm-up prompt", warmup_file)):
        try:
            ids = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise CtxEnergyError(f"{path}: no such {what} file; make it with `ctxenergy prompts`, or leave the "
                                 "option out to have it made") from None
        except (OSError, ValueError, EOFError) as exc:
            why = "not a NumPy array" if "pickle" in str(exc) else str(exc).splitlines()[0]
            raise CtxEnergyError(f"{path}: not a readable token-id file ({what}, .npy: {why}); delete it and "
                                 "rerun") from None
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise CtxEnergyError(f"{path}: the {what} holds {ids.dtype} values of shape {ids.shape}, not integer token "
                                 "ids; delete it to have it made again")
        if ids.size != length:
            raise CtxEnergyError(f"{path}: the {what} holds {ids.size} tokens, the cell needs exactly {length}; "
                                 f"use the L{length} prompts (`ctxenergy prompts --length {length}`)")
        if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
            raise CtxEnergyError(f"{path}: the {what} holds token id {bad}, beyond the vocabulary of {model} (ids 0 "
                                 f"to {vocab_size - 1}); make it with this model's tokenizer (`ctxenergy prompts`)")
        loaded.append(ids)
    if np.array_equal(loaded[0], loaded[1]):
        raise CtxEnergyError(f"{warmup_file}: the warm-up prompt is the measured prompt ({prompt_file}), so the "
                             "measured prefill could come from a prefix cache; use the cell's .warmup.npy (or leave "
                             "--warmup-prompt out)")
    return loaded[0], loaded[1]

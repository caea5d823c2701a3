"""Exact-length prompts as token ids: the base text tokenized, repeated and cut to L.

Prompts are passed to engines as ids, never as text, so their length is exact by construction
(decoding and re-encoding is not guaranteed to keep L). The warm-up prompt starts at a different
offset of the same token stream, so it shares no prefix with the measured prompt and an engine's
prefix cache cannot carry work from the warm-up into the measurement.

A batch of B sequences (a cell with batch_size B > 1) holds B distinct prompts of length L, shape (B, L), and its
warm-up B more: each sequence starts at its own offset of the same stream (its seed), chosen so that no two of
the 2B sequences share more than MAX_SHARED_PREFIX leading tokens, so no cache can serve one from another.
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
# Sequences of one batch (and of its warm-up) share at most this many leading tokens.
MAX_SHARED_PREFIX = 3
# Step between the candidate offsets of a batch's sequences (a prime, as WARMUP_OFFSET).
BATCH_OFFSET_STEP = 1009


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


def batch_offsets(base_ids, n: int) -> list[int]:
    """n offsets into the repeated token stream whose sequences share at most MAX_SHARED_PREFIX leading tokens."""
    base = np.asarray(base_ids, dtype=np.int64)
    key_len = MAX_SHARED_PREFIX + 1
    stream = np.tile(base, 2)
    offsets, seen = [], set()
    for k in range(base.size):
        offset = (k * BATCH_OFFSET_STEP) % base.size
        key = tuple(stream[offset : offset + key_len].tolist())
        if key not in seen:
            seen.add(key)
            offsets.append(offset)
            if len(offsets) == n:
                return offsets
    raise ValueError(f"the base text has only {len(offsets)} distinct {key_len}-token beginnings, a batch needs {n}")


def make_batch_prompts(
    tokenizer, length: int, batch_size: int, base_text: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The measured batch and the warm-up batch, each (batch_size, length) ids, all 2 * batch_size sequences
    distinct from their first tokens on (shared_prefix_tokens <= MAX_SHARED_PREFIX)."""
    text = base_text if base_text is not None else BASE_TEXT.read_text()
    base_ids = tokenizer.encode(text)
    rows = [exact_length_ids(base_ids, length, o) for o in batch_offsets(base_ids, 2 * batch_size)]
    return np.stack(rows[:batch_size]), np.stack(rows[batch_size:])


def shared_prefix_tokens(rows: np.ndarray) -> int:
    """The longest run of leading tokens that two of `rows` (2-D: one sequence per row) share."""
    rows = np.asarray(rows)
    longest = 0
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            diff = np.flatnonzero(rows[i] != rows[j])
            longest = max(longest, int(diff[0]) if diff.size else rows.shape[1])
    return longest


def save_ids(ids: np.ndarray, path: str | Path) -> None:
    """Write atomically: a crash leaves either no file or the whole file."""
    data = io.BytesIO()  # NumPy's own write reports a full disk without an errno ("4096 requested and 112 written")
    np.save(data, np.asarray(ids, dtype=np.int64))
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data.getvalue())


def load_ids(path: str | Path) -> np.ndarray:
    return np.load(path)


def load_cell_prompts(
    length: int,
    prompt_file: str | Path,
    warmup_file: str | Path,
    vocab_size: int | None = None,
    model: str = "the model",
    batch_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The measured and warm-up prompts of a cell of `length` tokens; a missing, unreadable or other-length file is
    one line naming it (a shorter warm-up leaves the windows that follow it colder and shorter than asked), and so
    are ids outside the model's vocabulary (`vocab_size`: the engine would fail on the GPU) and a warm-up that is
    the measured prompt (its prefill would be served from a prefix cache; the one deliberate case,
    engine_options.vllm.warmup_same_prompt, uses no file for it). A batch's files hold (batch_size, length) ids whose
    sequences, the warm-up's included, share at most MAX_SHARED_PREFIX leading tokens."""
    loaded = []
    for what, path in (("prompt", prompt_file), ("warm-up prompt", warmup_file)):
        try:
            ids = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise CtxEnergyError(
                f"{path}: no such {what} file; make it with `ctxenergy prompts`, or leave the "
                "option out to have it made"
            ) from None
        except (OSError, ValueError, EOFError) as exc:
            why = "not a NumPy array" if "pickle" in str(exc) else str(exc).splitlines()[0]
            raise CtxEnergyError(
                f"{path}: not a readable token-id file ({what}, .npy: {why}); delete it and rerun"
            ) from None
        if ids.ndim != (1 if batch_size == 1 else 2) or not np.issubdtype(ids.dtype, np.integer):
            raise CtxEnergyError(
                f"{path}: the {what} holds {ids.dtype} values of shape {ids.shape}, not integer token "
                "ids; delete it to have it made again"
            )
        if batch_size > 1 and ids.shape != (batch_size, length):
            raise CtxEnergyError(
                f"{path}: the {what} holds {ids.shape[0]} sequences of {ids.shape[1]} tokens, the "
                f"cell needs {batch_size} of exactly {length}; use the B{batch_size}/L{length} "
                f"prompts (`ctxenergy prompts --length {length} --batch-size {batch_size}`)"
            )
        if batch_size == 1 and ids.size != length:
            raise CtxEnergyError(
                f"{path}: the {what} holds {ids.size} tokens, the cell needs exactly {length}; "
                f"use the L{length} prompts (`ctxenergy prompts --length {length}`)"
            )
        if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
            bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
            raise CtxEnergyError(
                f"{path}: the {what} holds token id {bad}, beyond the vocabulary of {model} (ids 0 "
                f"to {vocab_size - 1}); make it with this model's tokenizer (`ctxenergy prompts`)"
            )
        loaded.append(ids)
    if batch_size > 1:
        shared = shared_prefix_tokens(np.concatenate(loaded))
        if shared > MAX_SHARED_PREFIX:
            raise CtxEnergyError(
                f"{prompt_file}: two sequences of the batch or its warm-up share their first {shared} "
                "tokens, so a prefix cache could serve one from another; delete the files to have "
                "them made again (`ctxenergy prompts --batch-size`)"
            )
    elif np.array_equal(loaded[0], loaded[1]):
        raise CtxEnergyError(
            f"{warmup_file}: the warm-up prompt is the measured prompt ({prompt_file}), so the "
            "measured prefill could come from a prefix cache; use the cell's .warmup.npy (or leave "
            "--warmup-prompt out)"
        )
    return loaded[0], loaded[1]

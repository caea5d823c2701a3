import numpy as np
import pytest

from ctxenergy.config import load_config
from ctxenergy.grid import Cell, cached_cell_tables, expand_grid
from ctxenergy.models import ByteTokenizer, load_tokenizer, parameter_counts, resolve_model
from ctxenergy.paths import REPO_ROOT
from ctxenergy.prompts import exact_length_ids, load_ids, make_prompts, save_ids
from ctxenergy.settings import Settings


def test_default_grid_has_one_cell_per_model_engine_phase_length():
    cfg = Settings.from_config(load_config(REPO_ROOT / "config.yaml"))
    cells = expand_grid(cfg)
    assert len(cells) == 2 * 2 * 2 * 11
    assert len(set(cells)) == len(cells)
    assert len({c.path for c in cells}) == len(cells)
    assert (
        Cell("llama-3.1-8b", "hf-sdpa", "prefill", 1024).path.as_posix()
        == "results/cells/llama-3.1-8b/hf-sdpa/prefill/L1024.parquet"
    )


@pytest.mark.parametrize("length", [1, 7, 256, 4096, 114688, 131072])
def test_prompts_have_exact_length_and_differ_from_warmup(length):
    tok = ByteTokenizer(128256)
    measured, warmup = make_prompts(tok, length)
    assert measured.size == length and warmup.size == length
    assert measured.dtype == np.int64
    assert measured[0] != warmup[0]  # no shared prefix: a prefix cache cannot reuse the warm-up
    assert measured.max() < 128256 and measured.min() >= 0


def test_prompts_are_deterministic_and_repeat_the_base_text():
    tok = ByteTokenizer(4096)
    a, _ = make_prompts(tok, 5000, base_text="abc")
    b, _ = make_prompts(tok, 5000, base_text="abc")
    assert np.array_equal(a, b)
    assert list(a[:6]) == [ord(c) + 3 for c in "abcabc"]
    assert list(exact_length_ids([1, 2, 3], 5, offset=2)) == [3, 1, 2, 3, 1]


def test_save_ids_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "p" / "L8.npy"
    save_ids(np.arange(8), path)
    assert list(load_ids(path)) == list(range(8))
    assert [p.name for p in path.parent.iterdir()] == ["L8.npy"]  # no temporary left behind


def test_tokenizer_fallback_is_recorded_by_name():
    cfg = Settings.from_config(load_config(REPO_ROOT / "config.yaml"))
    tok = load_tokenizer(resolve_model(cfg, "llama-3.1-8b"))
    assert tok.name == "bytes"  # no tokenizer files are shipped: the documented fallback


def test_parameter_counts_match_published_sizes():
    cfg = Settings.from_config(load_config(REPO_ROOT / "config.yaml"))
    llama = parameter_counts(resolve_model(cfg, "llama-3.1-8b").arch)["total"]
    qwen = parameter_counts(resolve_model(cfg, "qwen2-7b").arch)["total"]
    assert abs(llama / 8.03e9 - 1) < 0.01  # Llama-3.1-8B: 8.03 B parameters
    assert abs(qwen / 7.62e9 - 1) < 0.01  # Qwen2-7B: 7.62 B (untied embeddings)


def test_cached_cell_tables_finds_only_main_tables():
    found = cached_cell_tables(REPO_ROOT / "data/reference/nvidia-h200/cells")
    assert found and all(p.endswith(".parquet") and ".runs." not in p and ".trace." not in p for p in found)


def _measure(tmp_path, monkeypatch, *args):
    from ctxenergy.cli import main

    monkeypatch.chdir(tmp_path)
    return main(
        [
            "measure",
            "--config",
            str(REPO_ROOT / "config.yaml"),
            "--configfile",
            str(REPO_ROOT / "config" / "smoke.yaml"),
            "--model",
            "tiny-llama",
            "--engine",
            "hf-sdpa",
            "--phase",
            "prefill",
            *args,
        ]
    )


def test_measure_with_a_named_prompt_file_that_is_missing_writes_nothing(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "results" / "prompts" / "tiny-llama"
    save_ids(np.arange(64), prompts / "L64.warmup.npy")
    before = (prompts / "L64.warmup.npy").read_bytes()
    rc = _measure(
        tmp_path,
        monkeypatch,
        "--length",
        "256",
        "--prompt",
        "results/prompts/tiny-llama/L64.npy",
        "--warmup-prompt",
        "results/prompts/tiny-llama/L64.warmup.npy",
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("ctxenergy: results/prompts/tiny-llama/L64.npy: no such prompt file")
    assert sorted(p.name for p in prompts.iterdir()) == ["L64.warmup.npy"]  # nothing made, nothing overwritten
    assert (prompts / "L64.warmup.npy").read_bytes() == before
    assert not (tmp_path / "results" / "cells").exists()


def test_measure_with_a_warm_up_prompt_of_another_length_is_one_line_before_measuring(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "results" / "prompts" / "tiny-llama"
    save_ids(np.arange(64), prompts / "L64.npy")
    save_ids(np.arange(4000), prompts / "L64.warmup.npy")
    rc = _measure(tmp_path, monkeypatch, "--length", "64")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "L64.warmup.npy: the warm-up prompt holds 4000 tokens, the cell needs exactly 64" in err
    assert not (tmp_path / "results" / "cells").exists()


def test_measure_with_the_measured_prompt_as_warm_up_is_one_line_before_measuring(tmp_path, monkeypatch, capsys):
    """A warm-up on the measured prompt itself leaves it in an engine's prefix cache: the measured prefill is then
    served from the cache (only engine_options.vllm.warmup_same_prompt does that, on purpose, without files)."""
    prompts = tmp_path / "results" / "prompts" / "tiny-llama"
    save_ids(np.arange(64) + 3, prompts / "L64.npy")
    rc = _measure(tmp_path, monkeypatch, "--length", "64", "--warmup-prompt", "results/prompts/tiny-llama/L64.npy")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("ctxenergy: results/prompts/tiny-llama/L64.npy: the warm-up prompt is the measured prompt")
    assert not (tmp_path / "results" / "cells").exists()


def test_measure_with_token_ids_beyond_the_vocabulary_is_one_line_before_measuring(tmp_path, monkeypatch, capsys):
    save_ids(np.full(64, 10**6), tmp_path / "big.npy")
    rc = _measure(tmp_path, monkeypatch, "--length", "64", "--prompt", "big.npy")
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("ctxenergy: big.npy: the prompt holds token id 1000000, beyond the vocabulary of tiny-llama")
    assert not (tmp_path / "results" / "cells").exists()

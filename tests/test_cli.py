"""Every user error is one line on stderr (`ctxenergy: <file or key>: <problem>; <fix>`), no traceback, exit 2 (or 1
for a file the system refused); a bug keeps its traceback. Through the real `ctxenergy` and `snakemake` commands."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

CTXENERGY = [sys.executable, "-m", "ctxenergy"]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
MEASURE_SMOKE = [
    "measure",
    "--configfile",
    "config/smoke.yaml",
    "--model",
    "tiny-llama",
    "--engine",
    "hf-sdpa",
    "--phase",
    "prefill",
]


def one_line(proc: subprocess.CompletedProcess, exit_code: int = 2) -> str:
    """The single stderr line of a failed command (asserting that it is one line and no traceback)."""
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctxenergy: "), proc.stderr
    return lines[0]


def ctxenergy(args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run(CTXENERGY + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300)


def snakemake_line(args, cwd) -> str:
    """The `ctxenergy:` line of a Snakemake run stopped by the workflow at parse time."""
    proc = subprocess.run(SNAKEMAKE + ["-n"] + args, cwd=cwd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out and "Failed validating" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("ctxenergy: ")]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("length", ["0", "-5", "abc"])
def test_a_length_that_is_not_a_positive_number_is_one_line(length):
    line = one_line(ctxenergy(MEASURE_SMOKE + ["--length", length]))
    assert f"--length: '{length}' is not a positive number of tokens" in line and "ctxenergy measure --help" in line


def test_a_missing_argument_is_one_line():
    line = one_line(ctxenergy(["measure", "--model", "tiny-llama"]))
    assert "required: --engine, --phase, --length" in line


def test_an_engine_not_in_the_config_names_the_file_whose_list_it_is(tmp_path):
    line = one_line(ctxenergy(MEASURE_SMOKE[:5] + ["--engine", "vllm", "--phase", "prefill", "--length", "64"]))
    assert line.startswith("ctxenergy: config/smoke.yaml: engines: 'vllm' is not among hf-eager, hf-sdpa")
    line = one_line(
        ctxenergy(
            MEASURE_SMOKE[:3] + ["--model", "nope", "--engine", "hf-sdpa", "--phase", "prefill", "--length", "64"]
        )
    )
    assert line.startswith("ctxenergy: config/smoke.yaml: models: 'nope' is not among tiny-llama")


@pytest.mark.parametrize("content", [b"garbage\n", b""], ids=["garbage", "empty"])
def test_a_corrupt_prompt_file_is_named(tmp_path, content):
    bad = tmp_path / "L64.npy"
    bad.write_bytes(content)
    line = one_line(ctxenergy(MEASURE_SMOKE + ["--length", "64", "--prompt", bad, "--out", tmp_path / "c.parquet"]))
    assert line.startswith(f"ctxenergy: {bad}: not a readable token-id file") and "delete it" in line
    assert not (tmp_path / "c.parquet").exists()


def test_a_prompt_of_another_length_is_named(tmp_path):
    short = tmp_path / "L64.npy"
    np.save(short, np.arange(10))
    line = one_line(ctxenergy(MEASURE_SMOKE + ["--length", "64", "--prompt", short, "--out", tmp_path / "c.parquet"]))
    assert line.startswith(f"ctxenergy: {short}: the prompt holds 10 tokens, the cell needs exactly 64")


def test_an_invalid_model_config_json_is_one_line_with_its_path(tmp_path):
    arch = tmp_path / "config.json"
    arch.write_text("{not json")
    overlay = tmp_path / "model.yaml"
    overlay.write_text(f"models:\n  - name: tiny-llama\n    config: {arch}\n")
    line = one_line(ctxenergy(["check", "--config", "config/smoke.yaml", "--configfile", overlay]))
    assert line.startswith(f"ctxenergy: {arch}: model 'tiny-llama': not valid JSON")


def test_a_missing_config_file_is_named():
    line = one_line(ctxenergy(["check", "--config", "config/smoke.yaml", "--configfile", "config/nope.yaml"]))
    assert line.startswith("ctxenergy: config/nope.yaml: no such config file; check the path")


def test_a_missing_input_file_is_one_line():
    line = one_line(ctxenergy(["aggregate", "no-such-cell.parquet", "--out", "x.parquet"]), exit_code=2)
    assert line.startswith("ctxenergy: no-such-cell.parquet: missing;")


def test_a_bug_still_shows_its_traceback(monkeypatch, capsys):
    from ctxenergy import cli

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_info", broken)
    with pytest.raises(KeyError):
        cli.main(["info", "--quick"])
    with pytest.raises(OSError):  # an OSError without a file the user named is a bug too
        monkeypatch.setattr(cli, "cmd_info", lambda args: (_ for _ in ()).throw(OSError("no file")))
        cli.main(["info", "--quick"])


@pytest.mark.slow  # one CLI process per shipped config; test_config checks each in-process in the unit subset
@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_check_reads_every_shipped_config_over_config_yaml_as_the_workflow_does(path):
    proc = ctxenergy(["check", "--config", path.relative_to(REPO)])
    if proc.returncode == 0:
        assert proc.stdout.startswith(f"config.yaml + config/{path.name}: valid, ")
    else:  # only an engine that is not installed here (vLLM), said in one line with the command that installs it
        assert "needs the Python package 'vllm'" in one_line(proc) and "pip install" in one_line(proc)


def test_config_files_merge_mappings_key_by_key_like_snakemake(tmp_path):
    from ctxenergy.config import load_config

    overlay = tmp_path / "more.yaml"
    overlay.write_text("measure:\n  repeats: 7\n")
    config = load_config(REPO / "config.yaml", [REPO / "config" / "smoke.yaml", overlay])
    assert config["measure"]["repeats"] == 7 and config["measure"]["min_window_s"] == 0.2  # smoke's, kept


@pytest.mark.parametrize(
    "value, expected",
    [
        ("generate_tokens=abc", "ctxenergy: config: generate_tokens: 'abc' is not of type 'integer'; correct --config"),
        (
            "lengths=256",
            "ctxenergy: config: lengths: 256 is not of type 'array'; write a list: --config 'lengths=[a, b]'",
        ),
        ("measure={repeats:5}", "write a mapping with a space after each colon: --config 'measure={name: value}'"),
        ("engines=[vlm]", "ctxenergy: config: engines[0] 'vlm' is not a known engine"),
    ],
)
@pytest.mark.slow
def test_a_bad_config_value_through_snakemake_is_one_line_with_its_key_and_fix(repo_copy, value, expected):
    line = snakemake_line(["--configfile", "config/smoke.yaml", "--config", value], repo_copy)
    assert expected in line, line


@pytest.mark.slow
def test_lists_and_mappings_given_with_config_are_read_as_in_a_config_file(repo_copy):
    proc = subprocess.run(
        SNAKEMAKE
        + ["-n", "--configfile", "config/smoke.yaml", "--config", "lengths=[64, 128]", "measure={repeats: 2}"],
        cwd=repo_copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "L128.parquet" in proc.stdout  # and repeats is the number 2, or the schema would have refused it


@pytest.mark.slow
def test_snakemake_with_a_missing_configfile_fails_before_the_workflow_with_the_file_named(repo_copy):
    """Snakemake reads --configfile before the workflow, so its own error stands; its last line names the file."""
    proc = subprocess.run(
        SNAKEMAKE + ["-n", "--configfile", "nope.yaml"], cwd=repo_copy, capture_output=True, text=True
    )
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "FileNotFoundError: [Errno 2] No such file or directory: 'nope.yaml'", proc.stdout
    assert not Path(repo_copy / "results").joinpath("cells").exists()


def _subparsers():
    import argparse

    from ctxenergy.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version_prints_the_package_version(capsys):
    import ctxenergy
    from ctxenergy.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"ctxenergy {ctxenergy.__version__}"


def test_every_subcommand_documents_every_argument_and_shows_an_example():
    """No argument without help (positional ones included), no help cut mid-sentence, the engines listed where an
    engine is asked for, and an example command in each subcommand's help."""
    from ctxenergy.engines.registry import ENGINE_NAMES as KNOWN_ENGINES

    _, verbs = _subparsers()
    for name, sp in verbs.items():
        text = sp.format_help()
        assert f"example:\n  ctxenergy {name}" in text, name
        for action in sp._actions:
            if action.dest == "help":
                continue
            assert action.help, f"ctxenergy {name}: {action.option_strings or action.dest} has no help"
            assert not action.help.rstrip().endswith(("replace", "the", "a", "of", "and")), (name, action.help)
            if action.dest == "engine":
                assert all(e in action.help for e in KNOWN_ENGINES), (name, action.help)


def test_summary_prints_the_key_results_from_the_committed_tables(capsys):
    from ctxenergy.cli import main

    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    vllm = next(line for line in out.splitlines() if line.startswith("llama-3.1-8b  vllm"))
    # README's Table 1 row (prefill at 114,688: 7.95 s, 5,488 J [5,482, 5,491]) and 5.24 J per output token there
    assert all(v in vllm for v in ("114,688", "7.95", "5,488 [5,482, 5,491]", "0.0479", "5.241", "55.2k [52.2, 58.4]"))
    assert "systematic ±5.9%" in out and len([line for line in out.splitlines() if line.startswith("qwen2-7b")]) == 4


def _disk_full_after(max_bytes):
    """preexec_fn: every file may grow to max_bytes only (writes then fail with EFBIG, as on a full disk)."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


@pytest.mark.parametrize(
    "command, written",
    [
        (
            [
                "aggregate",
                *sorted(
                    str(p)
                    for p in (REPO / "data/reference/nvidia-h200/cells/llama-3.1-8b/hf-sdpa/prefill").glob("L*.parquet")
                    if p.name.count(".") == 1
                )[:2],
                "--out",
                "{tmp}/cells.parquet",
            ],
            "{tmp}/cells.parquet",
        ),
        (
            [
                "prompts",
                "--configfile",
                "config/smoke.yaml",
                "--model",
                "tiny-llama",
                "--length",
                "4096",
                "--out",
                "{tmp}/L4096.npy",
                "--warmup-out",
                "{tmp}/L4096.warmup.npy",
            ],
            "{tmp}/L4096.npy",
        ),
    ],
    ids=["aggregate", "prompts"],
)
def test_a_full_disk_is_one_line_naming_what_was_written_and_leaves_no_file(tmp_path, command, written):
    """pyarrow and NumPy raise errno 27/28 without a file name: the line names the command's --out instead."""
    args = [a.format(tmp=tmp_path) for a in command]
    proc = subprocess.run(
        CTXENERGY + args, cwd=REPO, capture_output=True, text=True, timeout=300, preexec_fn=_disk_full_after(1024)
    )
    line = one_line(proc, exit_code=1)
    assert line.startswith(f"ctxenergy: {written.format(tmp=tmp_path)}") and "free space" in line, line
    assert list(tmp_path.iterdir()) == []


def test_an_output_folder_that_is_a_file_is_one_line_before_measuring(tmp_path):
    (tmp_path / "blocked").write_text("a file where the output folder should be\n")
    out = tmp_path / "blocked" / "L64.parquet"
    # run in tmp_path: measuring without --prompt writes the prompt under results/ of the working folder
    i = MEASURE_SMOKE.index("config/smoke.yaml")
    args = (
        MEASURE_SMOKE[:i] + [REPO / "config" / "smoke.yaml", "--config", REPO / "config.yaml"] + MEASURE_SMOKE[i + 1 :]
    )
    line = one_line(ctxenergy(args + ["--length", "64", "--out", out], cwd=tmp_path), exit_code=1)
    assert line.startswith(f"ctxenergy: {tmp_path / 'blocked'}: ") and "not a folder" in line, line


def test_a_refused_write_names_the_folder_not_the_temporary_file():
    import errno
    from argparse import Namespace

    from ctxenergy.cli import _file_error_line

    exc = OSError(errno.EROFS, "Read-only file system", "results/.cells.parquet.x1y2.tmp")
    line = _file_error_line(exc, Namespace(out="results/cells.parquet"))
    assert (
        line
        == "ctxenergy: results: Read-only file system; check the folder's permissions (or write elsewhere with --out)"
    )
    full = _file_error_line(
        OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28]"), Namespace(out="results/cells.parquet")
    )
    assert full.startswith("ctxenergy: results/cells.parquet: No space left on device; free space")
    assert _file_error_line(OSError(errno.ENOSPC, "no file"), Namespace()) is None  # nothing named: a bug, traceback


def test_an_nvml_error_out_of_any_command_is_one_line(monkeypatch, capsys):
    from ctxenergy import cli

    class NVMLError(Exception):  # pynvml's class name; its per-code subclasses derive from it
        pass

    class NVMLError_GpuIsLost(NVMLError):  # noqa: N801 - pynvml's name
        pass

    monkeypatch.setattr(cli, "cmd_info", lambda args: (_ for _ in ()).throw(NVMLError_GpuIsLost("GPU is lost")))
    assert cli.main(["info", "--quick"]) == 1
    assert capsys.readouterr().err == (
        "ctxenergy: NVML: GPU is lost while running `ctxenergy info`; check the driver "
        "(nvidia-smi) and that this process may read the GPU\n"
    )

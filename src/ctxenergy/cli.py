"""`ctxenergy <verb>`: every stage of the workflow as a command, so one cell can be measured without Snakemake."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# When this job's Python got here (imports of the standard library only): the start of a cell's timeline.
JOB_START = time.perf_counter()

from ctxenergy.errors import ConfigError, CtxEnergyError  # noqa: E402 (after JOB_START, on purpose)

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

USER_FILE_ERRNOS = {
    errno.ENOENT,
    errno.EACCES,
    errno.EPERM,
    errno.ENOSPC,
    errno.EROFS,
    errno.EDQUOT,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EFBIG,
    errno.EEXIST,
}
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
DENIED_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


def _written_by(args) -> str:
    """What the command was writing (its --out, and --warmup-out): named when a write fails without a file name."""
    outs = [
        *(args.out if isinstance(getattr(args, "out", None), list) else [getattr(args, "out", None)]),
        getattr(args, "warmup_out", None),
    ]
    return ", ".join(str(o) for o in outs if o)


def _file_error_line(exc: OSError, args) -> str | None:
    """One line for an OSError about a file the user named or a disk the user chose; None for any other (a bug)."""
    filename, problem = exc.filename, exc.strerror
    if filename is None and type(exc) is FileNotFoundError and len(exc.args) == 1:  # pyarrow's form
        filename, problem = exc.args[0], "No such file or directory"
    if exc.errno not in USER_FILE_ERRNOS:
        return None
    if filename is None:  # pyarrow and NumPy writing to an open file: the command's output is what was written
        if exc.errno not in FULL_ERRNOS | DENIED_ERRNOS or not _written_by(args):
            return None
        filename, problem = _written_by(args), os.strerror(exc.errno)
    if Path(filename).name.startswith(".") and Path(filename).name.endswith(".tmp"):  # an atomic write's temporary
        filename = Path(filename).parent
    if exc.errno in FULL_ERRNOS:
        fix = "free space on its disk (or raise the file-size limit or quota) and rerun; nothing was left half-written"
    elif exc.errno in DENIED_ERRNOS:
        fix = "check the folder's permissions (or write elsewhere with --out)"
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR):
        problem, fix = "exists and is not a folder", "move that file away or write elsewhere with --out"
    else:
        fix = "check the path, its permissions and the free space"
    return f"ctxenergy: {filename}: {problem}; {fix}"


def _load(args):
    """The validated config of --config and --configfile (for check_semantics), and its read-only settings."""
    from ctxenergy.config import check_semantics, load_config
    from ctxenergy.settings import Settings

    config = load_config(args.config, args.configfile or [])
    return config, check_semantics, Settings.from_config(config)


def cmd_check(args) -> int:
    """Validate a config (schema and semantics) as the workflow sees it and, with --device, that its device is usable.

    Like `snakemake --configfile <file>`, a file other than config.yaml is read over config.yaml, so that the shipped
    overlays (config/campaign.yaml, config/spot-check.yaml, ...) check as they are used."""
    from ctxenergy.config import check_semantics, load_config

    files = [args.config, *(args.configfile or [])]
    base = Path("config.yaml")
    if base.is_file() and not (Path(args.config).is_file() and Path(args.config).samefile(base)):
        files.insert(0, str(base))
    source = " + ".join(files)
    config = load_config(files[0], files[1:])
    check_semantics(config, source, engines_needed=() if config["cells_source"] else None)  # as the workflow does
    if args.device:
        from ctxenergy.telemetry.nvml_api import check_device

        check_device(config["device"])
    from ctxenergy.grid import expand_grid
    from ctxenergy.settings import Settings

    print(f"{source}: valid, {len(expand_grid(Settings.from_config(config)))} cells")
    return 0


def cmd_prompts(args) -> int:
    from ctxenergy.models import load_tokenizer, resolve_model
    from ctxenergy.prompts import make_batch_prompts, make_prompts, save_ids

    config, check, settings = _load(args)
    check(config, str(args.config), engines_needed=())
    spec = resolve_model(settings, args.model)
    tokenizer = load_tokenizer(spec)
    if args.batch_size == 1:
        measured, warmup = make_prompts(tokenizer, args.length)
    else:
        measured, warmup = make_batch_prompts(tokenizer, args.length, args.batch_size)
    save_ids(warmup, args.warmup_out)
    save_ids(measured, args.out)
    print(
        f"{args.model} L={args.length} B={args.batch_size}: {measured.size} token ids ({tokenizer.name}) -> {args.out}"
    )
    return 0


def cmd_measure(args) -> int:
    from ctxenergy.grid import Cell, prompt_path
    from ctxenergy.models import load_tokenizer, resolve_model
    from ctxenergy.prompts import load_cell_prompts, make_batch_prompts, make_prompts, save_ids
    from ctxenergy.telemetry.nvml_api import check_device
    from ctxenergy.workflow_process import watch_workflow

    watch_workflow()  # a job outliving a killed Snakemake stops, without writing its cell
    config, check, settings = _load(args)
    _check_in_config(args, settings, "engines", args.engine)
    _check_in_config(args, settings, "models", args.model)
    check(config, " + ".join(_config_files(args)), engines_needed=(args.engine,))
    check_device(settings.device)
    _check_variant(args, settings)
    cell = Cell(args.model, args.engine, args.phase, args.length, args.batch_size, args.variant)
    prompt = Path(args.prompt) if args.prompt else prompt_path(args.model, args.length, batch_size=args.batch_size)
    warmup = (
        Path(args.warmup_prompt)
        if args.warmup_prompt
        else prompt_path(args.model, args.length, warmup=True, batch_size=args.batch_size)
    )
    named_missing = [p for p, arg in ((prompt, args.prompt), (warmup, args.warmup_prompt)) if arg and not p.exists()]
    if named_missing:  # a file named on the command line is never made here: it may be meant for another length
        raise CtxEnergyError(
            f"{named_missing[0]}: no such prompt file; make it with `ctxenergy prompts`, or leave "
            "the option out to have the cell's default prompts made"
        )
    if not prompt.exists() or not warmup.exists():  # only the default files, and only those missing
        tokenizer = load_tokenizer(resolve_model(settings, args.model))
        made = (
            make_prompts(tokenizer, args.length)
            if args.batch_size == 1
            else make_batch_prompts(tokenizer, args.length, args.batch_size)
        )
        for path, ids in zip((prompt, warmup), made):
            if not path.exists():
                save_ids(ids, path)
    # both of the cell's length, within the model's vocabulary, and not the same, before any GPU time
    load_cell_prompts(
        cell.length, prompt, warmup, resolve_model(settings, args.model).vocab_size, args.model, cell.batch_size
    )
    out = Path(args.out) if args.out else cell.path
    args.out = str(out)  # named by main() if the disk refuses the cell
    out.parent.mkdir(parents=True, exist_ok=True)  # a file in the way, a read-only folder: said before measuring
    if not os.access(out.parent, os.W_OK):
        raise OSError(
            errno.EROFS if os.statvfs(out.parent).f_flag & os.ST_RDONLY else errno.EACCES,
            "cannot write there",
            str(out.parent),
        )
    if _use_engine_host(args, settings):
        from ctxenergy import engine_host

        message = {
            "op": "measure",
            "cell": {
                "model": cell.model,
                "engine": cell.engine,
                "phase": cell.phase,
                "length": cell.length,
                "batch_size": cell.batch_size,
                "variant": cell.variant,
            },
            "prompt": str(prompt),
            "warmup_prompt": str(warmup),
            "out": str(out),
            "job_start": JOB_START,
        }
        summary = engine_host.request(
            _config_files(args), settings, cell.model, cell.engine, message, variant=cell.variant
        )["summary"]
    else:
        from ctxenergy.engine_host import stop_idle_hosts
        from ctxenergy.gpus import claimed_gpus
        from ctxenergy.measure import measure_cell
        from ctxenergy.measure import summary as cell_summary

        stop_idle_hosts()  # an idle host may hold the GPU this cell needs
        with claimed_gpus(settings, cell) as uuids:
            record = measure_cell(settings, cell, prompt, warmup, out, gpu_uuids=uuids, job_start=JOB_START)
        summary = cell_summary(record, out)
    print(json.dumps(summary, default=str))
    if args.progress_fd is not None:
        _print_progress(args.progress_fd, cell, summary, settings)
    return 0


def _print_progress(fd: int, cell, summary: dict, settings: Settings) -> None:
    """The cell's progress line (ctxenergy.progress) to `fd` (the workflow's console) and to this job's log. The cell
    is written by now: nothing here may fail the job, which would make Snakemake delete it."""
    elapsed_s = time.perf_counter() - JOB_START
    try:
        from ctxenergy.progress import cell_line

        line = cell_line(cell, summary, elapsed_s, settings)
    except Exception as exc:  # noqa: BLE001 - a courtesy line; the measured cell must stand
        line = f"ctxenergy cell {cell.cell_id}: {summary.get('status')} (no estimate: {type(exc).__name__}: {exc})"
    print(line, file=sys.stderr)
    try:
        os.write(fd, (line + "\n").encode())
    except OSError:  # the descriptor was not opened for this job: the log has the line
        pass


def _check_in_config(args, settings: Settings, key: str, name: str) -> None:
    """An engine or model the config does not list: one line naming the file whose list it is."""
    from ctxenergy.config import key_sources

    names = [m.name for m in settings.models] if key == "models" else list(settings.engines)
    if name in names:
        return
    files = _config_files(args)
    source = (key_sources(files, key) or [f"the schema's default (none of {', '.join(files)} sets it)"])[-1]
    raise ConfigError(f"{source}: {key}: '{name}' is not among {', '.join(names)}; add it there or pick one of those")


def _check_variant(args, settings: Settings) -> None:
    """--variant names one of the config's engine_variants of --engine (or `default`)."""

    known = settings.variants(args.engine)
    if args.variant not in known:
        raise ConfigError(
            f"--variant {args.variant}: not a variant of {args.engine} in the config (known: "
            f"{', '.join(known)}); add it under engine_variants.{args.engine} or pick one of those"
        )


def _config_files(args) -> list[str]:
    return [args.config, *(args.configfile or [])]


def _use_engine_host(args, settings: Settings) -> bool:
    """--engine-host (the workflow passes it) unless the config or a batch scheduler rules it out."""
    if not args.engine_host:
        return False
    from ctxenergy.engine_host import reuse_enabled

    enabled, why_not = reuse_enabled(settings)
    if not enabled:
        print(f"ctxenergy: no engine host ({why_not}): the engine loads in this job", file=sys.stderr)
    return enabled


def cmd_engine_host(args) -> int:
    """Serve cells on one loaded engine (started by the first cell job), or, with --stop, stop the idle hosts."""
    from ctxenergy import engine_host

    if args.stop:
        stopped = engine_host.stop_idle_hosts()
        print(f"stopped {len(stopped)} idle engine host(s)" + (f": pids {stopped}" if stopped else ""))
        return 0
    if not (args.model and args.engine and args.socket):
        raise CtxEnergyError("engine-host needs --model, --engine and --socket (or --stop)")
    return engine_host.serve(_config_files(args), args.model, args.engine, args.socket, args.idle_s, args.variant)


def cmd_warmup(args) -> int:
    from ctxenergy.warmup import warm_up_engine
    from ctxenergy.workflow_process import watch_workflow

    watch_workflow()

    config, check, settings = _load(args)
    check(config, str(args.config), engines_needed=(args.engine,))
    from ctxenergy.telemetry.nvml_api import check_device

    check_device(settings.device)
    from ctxenergy.gpus import claimed_gpus

    if _use_engine_host(args, settings):
        # The host this starts keeps the engine for the cells that follow: the warm-up is their engine load.
        from ctxenergy import engine_host

        engine_host.request(
            _config_files(args),
            settings,
            args.model,
            args.engine,
            {"op": "warmup", "out": args.out},
            variant=args.variant,
        )
        return 0
    from ctxenergy.engine_host import stop_idle_hosts

    stop_idle_hosts()  # an idle host of another engine may hold the GPU this needs
    with claimed_gpus(settings, args.model):  # on a multi-GPU node the warm-up must not land under a measured cell
        warm_up_engine(settings, args.model, args.engine, args.out, args.variant)
    return 0


def cmd_weights(args) -> int:
    """Generate a model's shared random weights (random_weights: shared) once, on the config's device."""
    from ctxenergy.engines.hf import make_shared_weights
    from ctxenergy.engines.registry import REFERENCE_ENGINE
    from ctxenergy.telemetry.nvml_api import check_device

    config, check, settings = _load(args)
    check(config, str(args.config), engines_needed=(REFERENCE_ENGINE,))  # its package builds the weights
    check_device(settings.device)
    out = make_shared_weights(settings, args.model)
    print(f"{args.model}: shared random weights -> {out}")
    return 0


def cmd_aggregate(args) -> int:
    from ctxenergy.aggregate import aggregate

    config = None
    if args.config:
        from ctxenergy.config import load_config

        config = load_config(args.config, args.configfile or [])
    allow = args.allow_mixed_settings or bool(config and config["allow_mixed_settings"])
    df = aggregate(args.cells, args.out, config, str(args.config), allow)
    print(f"{len(df)} cells -> {args.out}")
    return 0


def cmd_info(args) -> int:
    from ctxenergy.info import device_info

    info = device_info(measure_period=not args.quick)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _plugin(module: str, func: str):
    def call(args) -> int:
        import importlib

        return importlib.import_module(module).__getattribute__(func)(args) or 0

    return call


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line that names the fix, like every other user error."""

    def error(self, message):
        self.exit(
            2,
            f"ctxenergy: {self.prog.removeprefix('ctxenergy').strip() or 'ctxenergy'}: {message}; see "
            f"{self.prog} --help\n",
        )


def positive_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of tokens")
    return value


def build_parser() -> argparse.ArgumentParser:
    import ctxenergy
    from ctxenergy.engines.registry import ENGINE_NAMES
    from ctxenergy.paths import CELLS_DIR, REPORT, RESULTS_DIR

    p = OneLineParser(
        prog="ctxenergy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  ctxenergy summary\n  ctxenergy estimate --model llama-3.1-8b --engine vllm "
        "--input 50000 --output 300\n\n'ctxenergy <command> --help' shows each command's "
        "arguments and an example.",
    )
    p.add_argument("--version", action="version", version=f"ctxenergy {ctxenergy.__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="<command>")
    engines = ", ".join(ENGINE_NAMES)

    def verb(name: str, summary: str, *examples: str, description: str | None = None):
        return sub.add_parser(
            name,
            help=summary,
            description=description or summary,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="example:\n" + "\n".join(f"  ctxenergy {name} {e}".rstrip() for e in examples),
        )

    def with_config(sp):
        sp.add_argument("--config", default="config.yaml", help="study config (default: config.yaml)")
        sp.add_argument(
            "--configfile",
            action="append",
            help="a further config file read over --config, as `snakemake --configfile` does: its "
            "top-level keys replace those of the files before it (repeatable)",
        )
        return sp

    def model_arg(sp, required=True, what="a model name of the config's models"):
        sp.add_argument(
            "--model", required=required, help=f"{what}, e.g. tiny-llama (config/smoke.yaml) or llama-3.1-8b"
        )

    def engine_arg(sp, required=True):
        sp.add_argument("--engine", required=required, help=f"one of the config's engines: {engines}")

    def batch_arg(sp):
        sp.add_argument(
            "--batch-size",
            type=positive_tokens,
            default=1,
            help="B distinct prompts of length L run together (default 1; docs/serving.md)",
        )

    def variant_arg(sp):
        sp.add_argument(
            "--variant",
            default="default",
            help="the engine's option set of config engine_variants (default: engine_options alone)",
        )

    smoke = "--configfile config/smoke.yaml"
    sp = with_config(verb("check", "validate a config", f"{smoke} --device"))
    sp.add_argument("--device", action="store_true", help="also check that the config's device is usable here")
    sp.set_defaults(func=cmd_check)

    sp = with_config(
        verb(
            "prompts",
            "write the exact-length measured and warm-up prompts",
            f"{smoke} --model tiny-llama --length 256 --out results/prompts/tiny-llama/L256.npy "
            "--warmup-out results/prompts/tiny-llama/L256.warmup.npy",
        )
    )
    model_arg(sp)
    sp.add_argument("--length", type=positive_tokens, required=True, help="prompt length L in tokens")
    sp.add_argument("--out", required=True, help="measured prompt to write (.npy of token ids)")
    sp.add_argument("--warmup-out", required=True, help="warm-up prompt to write (.npy; a different text of length L)")
    batch_arg(sp)
    sp.set_defaults(func=cmd_prompts)

    sp = with_config(
        verb(
            "warmup",
            "check that an engine loads and prepare what its cells reuse",
            f"{smoke} --model tiny-llama --engine hf-sdpa --out results/warmup/tiny-llama/hf-sdpa.json",
        )
    )
    model_arg(sp)
    engine_arg(sp)
    sp.add_argument("--out", required=True, help="JSON to write: the engine's versions and start-up time")
    sp.add_argument("--engine-host", action="store_true", help="load the engine in a host that the cells reuse")
    variant_arg(sp)
    sp.set_defaults(func=cmd_warmup)

    sp = with_config(
        verb(
            "weights",
            "generate a model's shared random weights (random_weights: shared)",
            "--configfile config/weights-ab.yaml --model llama-3.1-8b",
        )
    )
    sp.add_argument("--model", required=True, help="a model of the config whose random_weights is shared")
    sp.set_defaults(func=cmd_weights)

    sp = with_config(
        verb(
            "measure",
            "measure one cell (model, engine, phase, L)",
            f"{smoke} --model tiny-llama --engine hf-sdpa --phase prefill --length 256",
        )
    )
    model_arg(sp)
    engine_arg(sp)
    sp.add_argument(
        "--phase",
        required=True,
        choices=["prefill", "generate"],
        help="prefill (1 output token) or generate (the config's generate_tokens)",
    )
    sp.add_argument("--length", type=positive_tokens, required=True, help="context length L in tokens")
    sp.add_argument("--prompt", help="measured prompt (.npy); made if missing")
    sp.add_argument("--warmup-prompt", help="warm-up prompt (.npy); made if missing")
    sp.add_argument("--out", help=f"cell table (default: {CELLS_DIR}/<model>/<engine>/<phase>/L<n>.parquet)")
    sp.add_argument(
        "--engine-host",
        action="store_true",
        help="measure on the engine host of this (model, engine), starting it if needed (the workflow's way)",
    )
    batch_arg(sp)
    variant_arg(sp)
    sp.add_argument(
        "--progress-fd",
        type=int,
        metavar="FD",
        help="also write the cell's one-line result, time and the run's remaining time to this open file "
        "descriptor (the workflow passes its console as 3, its log taking stdout and stderr)",
    )
    sp.set_defaults(func=cmd_measure)

    sp = with_config(
        verb(
            "engine-host",
            "keep one engine loaded for the cell jobs (started by them)",
            "--stop",
            description="keep one engine loaded for the cell jobs; `ctxenergy measure "
            "--engine-host` starts it, and the workflow stops it at its end",
        )
    )
    model_arg(sp, required=False)
    engine_arg(sp, required=False)
    sp.add_argument("--socket", help="Unix socket to listen on")
    sp.add_argument("--idle-s", type=float, default=120.0, help="exit after this long without a request")
    sp.add_argument("--stop", action="store_true", help="stop every idle engine host of this directory")
    variant_arg(sp)
    sp.set_defaults(func=cmd_engine_host)

    sp = verb(
        "compare",
        "cells measured twice: a rerun against reference cells, with intervals",
        "data/reference/nvidia-h200/campaign/cells results/cells --out results/compare.csv",
    )
    sp.add_argument("reference", help="directory of reference cells, e.g. data/reference/nvidia-h200/campaign/cells")
    sp.add_argument("candidate", help="directory of the rerun's cells, e.g. results/cells")
    sp.add_argument(
        "--tolerance-pct",
        type=float,
        help="difference still accepted between boards of one GPU model (default 5: NVML's per-board "
        "gain error, docs/measurement.md)",
    )
    sp.add_argument("--out", help="also write the table (.csv or .parquet)")
    sp.add_argument("--cells", nargs="*", help="only these cells (<model>/<engine>/<phase>/L<n>), each in both")
    sp.add_argument("--exit-zero", action="store_true", help="exit 0 even when a cell differs (the table says so)")
    sp.add_argument(
        "--across-models",
        action="store_true",
        help="match on engine, phase and L only: two model entries of one shape, e.g. the weight sets of "
        "config/weights-ab.yaml (results/cells/llama-3.1-8b against results/cells/llama-3.1-8b-uniform)",
    )
    sp.set_defaults(func=_plugin("ctxenergy.compare", "main"))

    sp = verb(
        "provenance",
        "where the cells came from: dates, boards, versions, commands, GPU time",
        "--cells results/cells.parquet --jobs results/benchmarks --out results/provenance.md",
    )
    sp.add_argument("--cells", required=True, help="table of cells (results/cells.parquet)")
    sp.add_argument("--jobs", help="Snakemake benchmark files of the jobs (results/benchmarks)")
    sp.add_argument("--logs", nargs="*", default=[], help="Snakemake logs of the runs that measured the cells")
    sp.add_argument("--out", required=True, help="Markdown file to write")
    sp.set_defaults(func=_plugin("ctxenergy.provenance", "main"))

    sp = verb(
        "add-cells",
        "newly measured cells, with their job times, into reference data",
        "results data/reference/nvidia-h200/campaign",
    )
    sp.add_argument("results", help="the run's results folder (cells/ and benchmarks/ inside), e.g. results")
    sp.add_argument("folder", help="the reference folder, e.g. data/reference/nvidia-h200/campaign")
    sp.set_defaults(func=_plugin("ctxenergy.add_cells", "main"))

    sp = verb(
        "aggregate",
        "all cell tables -> one table of cells",
        "results/cells/*/*/*/L*[0-9].parquet --out results/cells.parquet --config results/config/<hash>.yaml",
    )
    sp.add_argument("cells", nargs="+", help="cell tables (results/cells/<model>/<engine>/<phase>/L<n>.parquet)")
    sp.add_argument("--config", help="the run's settings: cells measured under others stop the aggregation")
    sp.add_argument("--configfile", action="append", help="further config files, merged over --config")
    sp.add_argument(
        "--allow-mixed-settings",
        action="store_true",
        help="combine cells measured under other settings than --config's, naming them",
    )
    sp.add_argument("--out", required=True, help="table of cells to write (results/cells.parquet)")
    sp.set_defaults(func=cmd_aggregate)

    sp = verb("info", "GPU, driver, NVML capabilities and the counter's measured update period", "--quick")
    sp.add_argument("--quick", action="store_true", help="skip measuring the counter's update period")
    sp.set_defaults(func=cmd_info)

    sp = verb("gpus", "which GPU each job holds (lock files); --check: a claim shuts out other jobs", "", "--check")
    sp.add_argument(
        "--check",
        action="store_true",
        help="claim a free GPU, show that another process is refused it, release it, claim it again",
    )
    sp.set_defaults(func=_plugin("ctxenergy.gpus", "main"))

    sp = verb(
        "pdf",
        "render an HTML page (the write-up) to PDF with a headless Chromium",
        "results/paper/paper.html --out results/paper/paper.pdf",
    )
    sp.add_argument("html", help="the page to render, e.g. results/paper/paper.html")
    sp.add_argument("--out", required=True, help="PDF to write")
    sp.set_defaults(func=_plugin("ctxenergy.outputs.pdf", "main"))

    sp = verb(
        "calibrate",
        "error of each energy method against a long window, on the GPU",
        "--quick --out results/calibration.csv",
    )
    sp.add_argument("--out", required=True, help="calibration table (.csv or .parquet)")
    sp.add_argument("--windows", type=int, default=20, help="short windows per length and pattern")
    sp.add_argument("--truth-s", type=float, default=20.0, help="length of the long reference window")
    sp.add_argument("--lengths", default="0.1,0.2,0.5,1,2", help="short window lengths in seconds")
    sp.add_argument("--patterns", default="bursts,steady", help="load patterns: bursts (idle -> work -> idle), steady")
    sp.add_argument("--windows-out", help="per-window table (default: beside --out, <name>.windows.<ext>)")
    sp.add_argument(
        "--quick", action="store_true", help="a ~1 minute check: lengths <= 0.5 s, 8 windows, short references"
    )
    sp.set_defaults(func=_plugin("ctxenergy.calibrate", "main"))

    sp = verb(
        "analyze",
        "table of cells -> derived tables (results/analysis/<table>.parquet)",
        "results/cells.parquet --out results/analysis/fits.parquet results/analysis/cost_model.parquet",
    )
    sp.add_argument("cells", help="table of cells (results/cells.parquet)")
    sp.add_argument("--cell-tables", nargs="*", default=[], help="the cells' own tables: traces and decode times")
    sp.add_argument("--config", help="effective config, to find each model's architecture (default: data/models)")
    sp.add_argument("--out", nargs="+", required=True, help="derived tables to write, each named <table>.parquet")
    sp.set_defaults(func=_plugin("ctxenergy.analysis.derive", "main"))

    sp = verb(
        "notebook",
        "execute an analysis notebook into an executed copy (nbclient)",
        "notebooks/explore.ipynb --analysis results/analysis --out results/notebooks/explore.ipynb",
    )
    sp.add_argument("notebook", help="the notebook to execute, e.g. notebooks/explore.ipynb")
    sp.add_argument(
        "--analysis",
        help="a run's folder of derived tables, shown beside the reference campaign's "
        "(the notebook's CTXENERGY_ANALYSIS)",
    )
    sp.add_argument("--out", required=True, help="executed copy to write (.ipynb)")
    sp.set_defaults(func=_plugin("ctxenergy.notebook", "main"))

    sp = verb(
        "summary",
        "the key results in the terminal, from cached derived tables",
        "",
        "--analysis results/analysis",
        description="the key results, from the derived tables (Parquet) alone: per model and engine the prefill "
        "at the largest L, J per input and per output token, and the fit's crossover",
    )
    sp.add_argument(
        "--analysis",
        help="folder of derived tables, e.g. results/analysis (default: the committed reference campaign's)",
    )
    sp.set_defaults(func=_plugin("ctxenergy.summary", "main"))

    sp = verb(
        "estimate",
        "GPU energy of one request (N input, G output tokens) from the committed fits",
        "--model llama-3.1-8b --engine vllm --input 50000 --output 300",
        description="GPU energy of one batch-1 request from the cost model (docs/cost-model.md): the prefill fit "
        "E(N) plus (G - 1) times the measured energy per output token, total and above idle, with "
        "statistical and total (systematic) 95 % intervals. A length outside the measured range is "
        "refused unless --extrapolate.",
    )
    sp.add_argument("--model", required=True, help="model name of the cost model, e.g. llama-3.1-8b or qwen2-7b")
    sp.add_argument("--engine", required=True, help=f"engine of the cost model: {engines}")
    sp.add_argument("--input", type=positive_tokens, required=True, help="input (prompt) tokens N")
    sp.add_argument(
        "--output",
        type=positive_tokens,
        required=True,
        help="output tokens G (the first is the prefill's; G - 1 decode steps)",
    )
    sp.add_argument(
        "--analysis",
        help="folder with cost_model.parquet, e.g. results/analysis (default: the committed "
        "reference campaign's, NVIDIA H200)",
    )
    sp.add_argument(
        "--extrapolate",
        action="store_true",
        help="compute outside the measured lengths too, flagged EXTRAPOLATED, instead of refusing",
    )
    sp.add_argument("--json", action="store_true", help="print the estimate as JSON")
    sp.set_defaults(func=_plugin("ctxenergy.analysis.cost_model", "main"))

    sp = verb(
        "figures",
        "derived tables -> figures (PNG and SVG), from Parquet only",
        "results/analysis/*.parquet --out results/figures/energy_intensity.png",
    )
    sp.add_argument("tables", nargs="+", help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--out", nargs="+", required=True, help="figures to write, each named <figure>.png or .svg")
    sp.set_defaults(func=_plugin("ctxenergy.outputs.figures", "main"))

    sp = verb(
        "tables",
        "derived tables -> small HTML pages of the key tables (claims, Table 1, thresholds, cost model)",
        "results/analysis/*.parquet --out results/tables/claims.html results/tables/cost_model.html",
        description="the key derived tables as small self-contained HTML pages, one table each: the paper's claims "
        "with their verdicts and intervals, Table 1, the thresholds (L*) and the cost model; the Snakemake report "
        "shows them (columns: workflow/schemas/derived.schema.yaml)",
    )
    sp.add_argument("tables", nargs="+", help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument(
        "--out",
        nargs="+",
        required=True,
        help="pages to write, each named <table>.html: claims, table1, thresholds or cost_model",
    )
    sp.set_defaults(func=_plugin("ctxenergy.outputs.table_pages", "main"))

    sp = verb(
        "report",
        "derived tables + figures -> one self-contained HTML page",
        "--tables results/analysis/*.parquet --figures results/figures/*.png --out results/report/report.html",
    )
    sp.add_argument("--tables", nargs="+", required=True, help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--figures", nargs="*", default=[], help="figure files (PNG) to embed")
    sp.add_argument("--out", required=True, help="report.html")
    sp.set_defaults(func=_plugin("ctxenergy.outputs.report", "main"))

    sp = verb(
        "paper",
        "the reproduction write-up (HTML + Markdown) from the derived tables",
        "--tables results/analysis/*.parquet --figures results/figures/*.png --out results/paper/paper.html "
        "--markdown results/paper/paper.md",
    )
    sp.add_argument("--tables", nargs="+", required=True, help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--figures", nargs="*", default=[], help="figure files (PNG) to embed")
    sp.add_argument("--template", default="paper/template.md", help="the write-up's Markdown template")
    sp.add_argument("--out", required=True, help="paper.html")
    sp.add_argument("--markdown", required=True, help="paper.md")
    sp.set_defaults(func=_plugin("ctxenergy.outputs.paper", "main"))

    sp = verb(
        "publish",
        "a run's outputs copied into a folder of their own, in the layout of results/",
        "results/analysis/* results/figures/* results/report/report.html results/paper/paper.html "
        "results/paper/paper.md results/provenance.md --out data/reference/nvidia-h200/campaign/outputs",
        description="a run's outputs (derived tables, figures, report, write-up, provenance) copied into a "
        "folder of their own, each file to its place relative to --root, so that the write-up's "
        "links (../figures/) still resolve; every file is checked before any is copied, and each "
        "is written whole or not at all",
    )
    sp.add_argument("files", nargs="+", help=f"files to copy, each under --root, e.g. {REPORT}")
    sp.add_argument(
        "--root", default=str(RESULTS_DIR), help=f"the folder whose layout the copy keeps (default: {RESULTS_DIR})"
    )
    sp.add_argument("--out", required=True, help="folder to copy into (made if missing; other files in it stay)")
    sp.set_defaults(func=_plugin("ctxenergy.outputs.publish", "main"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CtxEnergyError as exc:
        print(f"ctxenergy: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file the user named or a disk the user chose: missing, unreadable, full, read-only. Other OSErrors (no
        # file involved) are bugs and keep their traceback.
        line = _file_error_line(exc, args)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from ctxenergy.telemetry.nvml_meter import is_nvml_error

        if not is_nvml_error(exc):  # a bug: its traceback
            raise
        print(
            f"ctxenergy: NVML: {exc} while running `ctxenergy {args.verb}`; check the driver (nvidia-smi) and "
            "that this process may read the GPU",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

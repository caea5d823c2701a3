"""`ctxenergy <verb>`: every stage of the workflow as a command, so one cell can be measured without Snakemake."""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from pathlib import Path

# When this job's Python got here (imports of the standard library only): the start of a cell's timeline.
JOB_START = time.perf_counter()

from ctxenergy.errors import ConfigError, CtxEnergyError

USER_FILE_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR,
                    errno.ENOTDIR}


def _load(args):
    from ctxenergy.config import check_semantics, load_config

    config = load_config(args.config, args.configfile or [])
    return config, check_semantics


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

    print(f"{source}: valid, {len(expand_grid(config))} cells")
    return 0


def cmd_prompts(args) -> int:
    from ctxenergy.models import load_tokenizer, resolve_model
    from ctxenergy.prompts import make_prompts, save_ids

    config, check = _load(args)
    check(config, str(args.config), engines_needed=())
    spec = resolve_model(config, args.model)
    tokenizer = load_tokenizer(spec)
    measured, warmup = make_prompts(tokenizer, args.length)
    save_ids(warmup, args.warmup_out)
    save_ids(measured, args.out)
    print(f"{args.model} L={args.length}: {measured.size} token ids ({tokenizer.name}) -> {args.out}")
    return 0


def cmd_measure(args) -> int:
    from ctxenergy.grid import Cell, prompt_path
    from ctxenergy.models import load_tokenizer, resolve_model
    from ctxenergy.prompts import load_cell_prompts, make_prompts, save_ids
    from ctxenergy.telemetry.nvml_api import check_device
    from ctxenergy.workflow_process import watch_workflow

    watch_workflow()  # a job outliving a killed Snakemake stops, without writing its cell
    config, check = _load(args)
    _check_in_config(args, config, "engines", args.engine)
    _check_in_config(args, config, "models", args.model)
    check(config, " + ".join(_config_files(args)), engines_needed=(args.engine,))
    check_device(config["device"])
    cell = Cell(args.model, args.engine, args.phase, args.length)
    prompt = Path(args.prompt) if args.prompt else prompt_path(args.model, args.length)
    warmup = Path(args.warmup_prompt) if args.warmup_prompt else prompt_path(args.model, args.length, warmup=True)
    named_missing = [p for p, arg in ((prompt, args.prompt), (warmup, args.warmup_prompt)) if arg and not p.exists()]
    if named_missing:  # a file named on the command line is never made here: it may be meant for another length
        raise CtxEnergyError(f"{named_missing[0]}: no such prompt file; make it with `ctxenergy prompts`, or leave "
                             "the option out to have the cell's default prompts made")
    if not prompt.exists() or not warmup.exists():  # only the default files, and only those missing
        made = make_prompts(load_tokenizer(resolve_model(config, args.model)), args.length)
        for path, ids in zip((prompt, warmup), made):
            if not path.exists():
                save_ids(ids, path)
    load_cell_prompts(cell.length, prompt, warmup)  # both of the cell's length, before any GPU time
    out = Path(args.out) if args.out else cell.path
    if _use_engine_host(args, config):
        from ctxenergy import engine_host

        message = {"op": "measure", "cell": {"model": cell.model, "engine": cell.engine, "phase": cell.phase,
                                             "length": cell.length},
                   "prompt": str(prompt), "warmup_prompt": str(warmup), "out": str(out), "job_start": JOB_START}
        summary = engine_host.request(_config_files(args), config, cell.model, cell.engine, message)["summary"]
    else:
        from ctxenergy.engine_host import stop_idle_hosts
        from ctxenergy.gpus import claimed_gpus
        from ctxenergy.measure import measure_cell
        from ctxenergy.measure import summary as cell_summary

        stop_idle_hosts()  # an idle host may hold the GPU this cell needs
        with claimed_gpus(config, cell) as uuids:
            record = measure_cell(config, cell, prompt, warmup, out, gpu_uuids=uuids, job_start=JOB_START)
        summary = cell_summary(record, out)
    print(json.dumps(summary, default=str))
    return 0


def _check_in_config(args, config: dict, key: str, name: str) -> None:
    """An engine or model the config does not list: one line naming the file whose list it is."""
    from ctxenergy.config import key_sources

    names = [m["name"] for m in config["models"]] if key == "models" else config[key]
    if name in names:
        return
    files = _config_files(args)
    source = (key_sources(files, key) or [f"the schema's default (none of {', '.join(files)} sets it)"])[-1]
    raise ConfigError(f"{source}: {key}: '{name}' is not among {', '.join(names)}; add it there or pick one of those")


def _config_files(args) -> list[str]:
    return [args.config, *(args.configfile or [])]


def _use_engine_host(args, config: dict) -> bool:
    """--engine-host (the workflow passes it) unless the config or a batch scheduler rules it out."""
    if not args.engine_host:
        return False
    from ctxenergy.engine_host import reuse_enabled

    enabled, why_not = reuse_enabled(config)
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
    return engine_host.serve(_config_files(args), args.model, args.engine, args.socket, args.idle_s)


def cmd_warmup(args) -> int:
    from ctxenergy.warmup import warm_up_engine
    from ctxenergy.workflow_process import watch_workflow

    watch_workflow()

    config, check = _load(args)
    check(config, str(args.config), engines_needed=(args.engine,))
    from ctxenergy.telemetry.nvml_api import check_device

    check_device(config["device"])
    from ctxenergy.gpus import claimed_gpus

    if _use_engine_host(args, config):
        # The host this starts keeps the engine for the cells that follow: the warm-up is their engine load.
        from ctxenergy import engine_host

        engine_host.request(_config_files(args), config, args.model, args.engine, {"op": "warmup", "out": args.out})
        return 0
    from ctxenergy.engine_host import stop_idle_hosts

    stop_idle_hosts()  # an idle host of another engine may hold the GPU this needs
    with claimed_gpus(config, args.model):  # on a multi-GPU node the warm-up must not land under a measured cell
        warm_up_engine(config, args.model, args.engine, args.out)
    return 0


def cmd_weights(args) -> int:
    """Generate a model's shared random weights (random_weights: shared) once, on the config's device."""
    from ctxenergy.engines.registry import REFERENCE_ENGINE
    from ctxenergy.telemetry.nvml_api import check_device
    from ctxenergy.weights import make_shared_weights

    config, check = _load(args)
    check(config, str(args.config), engines_needed=(REFERENCE_ENGINE,))  # its package builds the weights
    check_device(config["device"])
    out = make_shared_weights(config, args.model)
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
        self.exit(2, f"ctxenergy: {self.prog.removeprefix('ctxenergy').strip() or 'ctxenergy'}: {message}; see "
                     f"{self.prog} --help\n")


def positive_tokens(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of tokens")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="ctxenergy", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)

    def with_config(sp):
        sp.add_argument("--config", default="config.yaml", help="study config (default: config.yaml)")
        sp.add_argument("--configfile", action="append", help="further config files; their top-level keys replace")
        return sp

    sp = with_config(sub.add_parser("check", help="validate a config"))
    sp.add_argument("--device", action="store_true", help="also check that the config's device is usable here")
    sp.set_defaults(func=cmd_check)

    sp = with_config(sub.add_parser("prompts", help="write the exact-length measured and warm-up prompts"))
    sp.add_argument("--model", required=True)
    sp.add_argument("--length", type=positive_tokens, required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--warmup-out", required=True)
    sp.set_defaults(func=cmd_prompts)

    sp = with_config(sub.add_parser("warmup", help="check that an engine loads and prepare what its cells reuse"))
    sp.add_argument("--model", required=True)
    sp.add_argument("--engine", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--engine-host", action="store_true", help="load the engine in a host that the cells reuse")
    sp.set_defaults(func=cmd_warmup)

    sp = with_config(sub.add_parser("weights", help="generate a model's shared random weights (random_weights: shared)"))
    sp.add_argument("--model", required=True, help="a model of the config whose random_weights is shared")
    sp.set_defaults(func=cmd_weights)

    sp = with_config(sub.add_parser("measure", help="measure one cell (model, engine, phase, L)"))
    sp.add_argument("--model", required=True)
    sp.add_argument("--engine", required=True)
    sp.add_argument("--phase", required=True, choices=["prefill", "generate"])
    sp.add_argument("--length", type=positive_tokens, required=True)
    sp.add_argument("--prompt", help="measured prompt (.npy); made if missing")
    sp.add_argument("--warmup-prompt", help="warm-up prompt (.npy); made if missing")
    sp.add_argument("--out", help="cell table (default: results/cells/<model>/<engine>/<phase>/L<n>.parquet)")
    sp.add_argument("--engine-host", action="store_true",
                    help="measure on the engine host of this (model, engine), starting it if needed (the workflow's way)")
    sp.set_defaults(func=cmd_measure)

    sp = with_config(sub.add_parser("engine-host", help="keep one engine loaded for the cell jobs (started by them)"))
    sp.add_argument("--model")
    sp.add_argument("--engine")
    sp.add_argument("--socket", help="Unix socket to listen on")
    sp.add_argument("--idle-s", type=float, default=120.0, help="exit after this long without a request")
    sp.add_argument("--stop", action="store_true", help="stop every idle engine host of this directory")
    sp.set_defaults(func=cmd_engine_host)

    sp = sub.add_parser("compare", help="cells measured twice: a rerun against reference cells, with intervals")
    sp.add_argument("reference", help="directory of reference cells, e.g. data/reference/nvidia-h200/campaign/cells")
    sp.add_argument("candidate", help="directory of the rerun's cells, e.g. results/cells")
    sp.add_argument("--tolerance-pct", type=float,
                    help="difference still accepted between boards of one GPU model (default 5: NVML's per-board "
                         "gain error, docs/measurement.md)")
    sp.add_argument("--out", help="also write the table (.csv or .parquet)")
    sp.add_argument("--cells", nargs="*", help="only these cells (<model>/<engine>/<phase>/L<n>), each in both")
    sp.add_argument("--exit-zero", action="store_true", help="exit 0 even when a cell differs (the table says so)")
    sp.add_argument("--across-models", action="store_true",
                    help="match on engine, phase and L only: two model entries of one shape, e.g. the weight sets of "
                         "config/weights-ab.yaml (results/cells/llama-3.1-8b against results/cells/llama-3.1-8b-uniform)")
    sp.set_defaults(func=_plugin("ctxenergy.compare", "main"))

    sp = sub.add_parser("provenance", help="where the cells came from: dates, boards, versions, commands, GPU time")
    sp.add_argument("--cells", required=True, help="table of cells (results/cells.parquet)")
    sp.add_argument("--jobs", help="Snakemake benchmark files of the jobs (results/benchmarks)")
    sp.add_argument("--logs", nargs="*", default=[], help="Snakemake logs of the runs that measured the cells")
    sp.add_argument("--out", required=True, help="Markdown file to write")
    sp.set_defaults(func=_plugin("ctxenergy.provenance", "main"))

    sp = sub.add_parser("add-cells", help="newly measured cells, with their job times, into reference data")
    sp.add_argument("results", help="the run's results folder (cells/ and benchmarks/ inside), e.g. results")
    sp.add_argument("folder", help="the reference folder, e.g. data/reference/nvidia-h200/campaign")
    sp.set_defaults(func=_plugin("ctxenergy.add_cells", "main"))

    sp = sub.add_parser("aggregate", help="all cell tables -> one table of cells")
    sp.add_argument("cells", nargs="+")
    sp.add_argument("--config", help="the run's settings: cells measured under others stop the aggregation")
    sp.add_argument("--configfile", action="append", help="further config files; their top-level keys replace")
    sp.add_argument("--allow-mixed-settings", action="store_true",
                    help="combine cells measured under other settings than --config's, naming them")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_aggregate)

    sp = sub.add_parser("info", help="GPU, driver, NVML capabilities and the counter's measured update period")
    sp.add_argument("--quick", action="store_true", help="skip measuring the counter's update period")
    sp.set_defaults(func=cmd_info)

    sp = sub.add_parser("gpus", help="which GPU each job holds (lock files); --check: a claim shuts out other jobs")
    sp.add_argument("--check", action="store_true",
                    help="claim a free GPU, show that another process is refused it, release it, claim it again")
    sp.set_defaults(func=_plugin("ctxenergy.gpus", "main"))

    sp = sub.add_parser("pdf", help="render an HTML page (the write-up) to PDF with a headless Chromium")
    sp.add_argument("html")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=_plugin("ctxenergy.pdf", "main"))

    sp = sub.add_parser("calibrate", help="error of each energy method against a long window, on the GPU")
    sp.add_argument("--out", required=True, help="calibration table (.csv or .parquet)")
    sp.add_argument("--windows", type=int, default=20, help="short windows per length and pattern")
    sp.add_argument("--truth-s", type=float, default=20.0, help="length of the long reference window")
    sp.add_argument("--lengths", default="0.1,0.2,0.5,1,2", help="short window lengths in seconds")
    sp.add_argument("--patterns", default="bursts,steady", help="load patterns: bursts (idle -> work -> idle), steady")
    sp.add_argument("--windows-out", help="per-window table (default: beside --out, <name>.windows.<ext>)")
    sp.add_argument("--quick", action="store_true", help="a ~1 minute check: lengths <= 0.5 s, 8 windows, short references")
    sp.set_defaults(func=_plugin("ctxenergy.calibrate", "main"))

    sp = sub.add_parser("analyze", help="table of cells -> derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("cells", help="table of cells (results/cells.parquet)")
    sp.add_argument("--cell-tables", nargs="*", default=[], help="the cells' own tables: traces and decode times")
    sp.add_argument("--config", help="effective config, to find each model's architecture (default: data/models)")
    sp.add_argument("--out", nargs="+", required=True, help="derived tables to write, each named <table>.parquet")
    sp.set_defaults(func=_plugin("ctxenergy.analysis.derive", "main"))

    sp = sub.add_parser("figures", help="derived tables -> figures (PNG and SVG), from Parquet only")
    sp.add_argument("tables", nargs="+", help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--out", nargs="+", required=True, help="figures to write, each named <figure>.png or .svg")
    sp.set_defaults(func=_plugin("ctxenergy.figures", "main"))

    sp = sub.add_parser("report", help="derived tables + figures -> one self-contained HTML page")
    sp.add_argument("--tables", nargs="+", required=True, help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--figures", nargs="*", default=[], help="figure files (PNG) to embed")
    sp.add_argument("--out", required=True, help="report.html")
    sp.set_defaults(func=_plugin("ctxenergy.report", "main"))

    sp = sub.add_parser("paper", help="the reproduction write-up (HTML + Markdown) from the derived tables")
    sp.add_argument("--tables", nargs="+", required=True, help="derived tables (results/analysis/<table>.parquet)")
    sp.add_argument("--figures", nargs="*", default=[], help="figure files (PNG) to embed")
    sp.add_argument("--template", default="paper/template.md", help="the write-up's Markdown template")
    sp.add_argument("--out", required=True, help="paper.html")
    sp.add_argument("--markdown", required=True, help="paper.md")
    sp.set_defaults(func=_plugin("ctxenergy.paper", "main"))
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
        filename, problem = exc.filename, exc.strerror
        if filename is None and type(exc) is FileNotFoundError and len(exc.args) == 1:  # pyarrow's form
            filename, problem = exc.args[0], "No such file or directory"
        elif filename is None or exc.errno not in USER_FILE_ERRNOS:
            raise
        print(f"ctxenergy: {filename}: {problem}; check the path, its permissions and the free space", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

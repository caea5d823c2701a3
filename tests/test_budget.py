"""missing_cells under a time budget: job times estimated from earlier jobs, longest cells first, none cut off."""

import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import REFERENCE, REPO

from ctxenergy.budget import RESERVE_S, SAFETY, estimate_s, job_times, within_budget
from ctxenergy.config import check_semantics, load_config, validate_schema
from ctxenergy.errors import ConfigError
from ctxenergy.grid import Cell, expand_grid
from ctxenergy.settings import Settings

CONFIG = Settings.from_config(load_config(REPO / "config.yaml"))


def write_jobs(root: Path, cells: dict[str, float], loads: dict[str, list[float]]) -> Path:
    for cell_id, s in cells.items():
        tsv = root / "measure_cell" / f"{cell_id}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(f"s\th:m:s\n{s}\t0:00:00\n")
    for pair, rows in loads.items():
        tsv = root / "warmup_engine" / f"{pair}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text("s\th:m:s\n" + "".join(f"{s}\t0:00:00\n" for s in rows))
    return root


def test_estimates_own_time_then_interpolation_then_the_ratio_to_hf_sdpa(tmp_path):
    jobs = write_jobs(
        tmp_path,
        {
            "llama-3.1-8b/hf-paged/prefill/L1024": 20.0,
            "llama-3.1-8b/hf-paged/prefill/L4096": 80.0,
            "llama-3.1-8b/hf-sdpa/prefill/L1024": 16.0,
            "llama-3.1-8b/hf-sdpa/prefill/L256": 15.0,
            "qwen2-7b/hf-sdpa/prefill/L4096": 18.0,
            "llama-3.1-8b/hf-eager/prefill/L16384": 4.0,  # an oom job
        },
        {},
    )
    t = job_times([jobs])
    assert estimate_s(t, Cell("llama-3.1-8b", "hf-paged", "prefill", 1024)) == 20.0
    # between two measured L: log-log, so halfway in log L is the geometric mean
    assert estimate_s(t, Cell("llama-3.1-8b", "hf-paged", "prefill", 2048)) == pytest.approx(math.sqrt(20 * 80))
    # below every measured L: hf-sdpa's time there times hf-paged/hf-sdpa at the nearest L both have (1024: 1.25x)
    assert estimate_s(t, Cell("llama-3.1-8b", "hf-paged", "prefill", 256)) == pytest.approx(15.0 * 20 / 16)
    # another model: its hf-sdpa time times this engine's ratio, taken from the other model's nearest L with both
    assert estimate_s(t, Cell("qwen2-7b", "hf-paged", "prefill", 4096)) == pytest.approx(18.0 * 20 / 16)
    # an engine never measured, or no hf-sdpa time to scale: nothing to estimate from
    assert estimate_s(t, Cell("llama-3.1-8b", "vllm", "prefill", 1024)) is None
    assert estimate_s(t, Cell("qwen2-7b", "hf-paged", "generate", 1024)) is None
    # a job that measured nothing (4 s, oom) is not a neighbour to interpolate from
    assert estimate_s(t, Cell("llama-3.1-8b", "hf-eager", "prefill", 8192)) is None


def test_a_job_that_loaded_the_engine_itself_counts_without_the_load(tmp_path):
    """The budget charges each (model, engine) load once; a cell job that loaded the engine in its own processes (its
    memory says so) would otherwise carry a second one into the estimates interpolated from it."""
    jobs = write_jobs(tmp_path, {"llama-3.1-8b/hf-paged/prefill/L1024": 20.0}, {"llama-3.1-8b/hf-paged": [25.0, 18.0]})
    for name, s, rss_mb in (("L512", 38.0, 1219.6), ("L4096", 21.0, 69.0)):
        (jobs / "measure_cell" / "llama-3.1-8b" / "hf-paged" / "prefill" / f"{name}.tsv").write_text(
            f"s\th:m:s\tmax_rss\n{s}\t0:00:00\t{rss_mb}\n"
        )
    t = job_times([jobs])
    loaded, served, no_memory = (t[("llama-3.1-8b", "hf-paged", "prefill", L)] for L in (512, 4096, 1024))
    assert loaded == 38.0 - 18.0  # the pair's shortest warm-up job taken off: the estimate errs long
    assert served == 21.0 and no_memory == 20.0  # a job served by an engine host, a file without memory: as they are
    # in the committed campaign: the first hf-paged cell of a call on a machine whose warm-up had run before
    committed = job_times([REFERENCE / "campaign" / "jobs"])[("llama-3.1-8b", "hf-paged", "prefill", 512)]
    assert committed == pytest.approx(33.81 - 18.48)


def test_chooses_the_longest_cells_that_fit_with_one_engine_load_per_pair(tmp_path):
    cells = {f"llama-3.1-8b/hf-paged/prefill/L{L}": s for L, s in ((1024, 100.0), (2048, 60.0), (4096, 40.0))}
    jobs = write_jobs(tmp_path, cells, {"llama-3.1-8b/hf-paged": [20.0, 30.0]})
    todo = [Cell.from_id(c) for c in cells] + [Cell("llama-3.1-8b", "vllm", "prefill", 1024)]
    # room for the 100 s cell with its load (30 s, the longest warm-up) and the 40 s one, not for the 60 s one
    budget = RESERVE_S + (100 + 30 + 40) * SAFETY + 1
    chosen, summary = within_budget(todo, budget, [jobs], CONFIG)
    assert [c.length for c in chosen] == [1024, 4096]
    assert f"2 of 4 missing cells, ~{(100 + 30 + 40) * SAFETY:.0f} s" in summary
    assert "1 without a job time to estimate from, not chosen (e.g. llama-3.1-8b/vllm/prefill/L1024" in summary
    assert within_budget(todo, RESERVE_S + 50, [jobs], CONFIG)[0] == []  # no cell fits with its engine load
    # engine_reuse false: every cell job loads the engine, so each is charged a load: only the 100 s cell fits
    no_reuse = replace(CONFIG, measure=replace(CONFIG.measure, engine_reuse=False))
    assert [c.length for c in within_budget(todo, budget, [jobs], no_reuse)[0]] == [1024]


def test_a_cell_past_the_models_positions_costs_seconds_without_any_estimate(tmp_path):
    jobs = write_jobs(tmp_path, {}, {})
    cell = Cell("llama-3.1-8b", "hf-sdpa", "generate", 131072)  # L + G > 131072 positions: recorded, not measured
    chosen, summary = within_budget([cell, Cell("llama-3.1-8b", "hf-sdpa", "prefill", 65536)], 60, [jobs], CONFIG)
    assert chosen == [cell] and "1 without a job time" in summary


def test_fills_one_pairs_cells_before_paying_another_pairs_load(tmp_path):
    cells = {
        "llama-3.1-8b/vllm/prefill/L114688": 60.0,
        "llama-3.1-8b/vllm/prefill/L1024": 20.0,
        "llama-3.1-8b/vllm/prefill/L2048": 20.0,
        "qwen2-7b/vllm/prefill/L114688": 50.0,
    }
    jobs = write_jobs(tmp_path, cells, {"llama-3.1-8b/vllm": [180.0], "qwen2-7b/vllm": [110.0]})
    todo = [Cell.from_id(c) for c in cells]
    # room for both longest cells with both loads (400 s); longest first across pairs would take just those two
    chosen, summary = within_budget(todo, RESERVE_S + 400 * SAFETY + 1, [jobs], CONFIG)
    assert [c.cell_id for c in chosen] == [
        "llama-3.1-8b/vllm/prefill/L114688",
        "llama-3.1-8b/vllm/prefill/L1024",
        "llama-3.1-8b/vllm/prefill/L2048",
    ]
    assert f"~{280 * SAFETY:.0f} s estimated" in summary  # one load: 180 + 60 + 20 + 20
    # with room for both pairs, every cell
    assert len(within_budget(todo, RESERVE_S + 440 * SAFETY + 1, [jobs], CONFIG)[0]) == 4


@pytest.mark.slow
def test_committed_campaign_is_complete_and_a_rerun_is_planned_from_measured_times():
    cfg = Settings.from_config(load_config(REPO / "config.yaml", [REPO / "config" / "campaign.yaml"]))
    t = job_times(cfg.job_times)
    done = {
        p.relative_to(REFERENCE / "campaign" / "cells").with_suffix("").as_posix()
        for p in (REFERENCE / "campaign" / "cells").rglob("L*[0-9].parquet")
    }
    grid = expand_grid(cfg)
    assert len(grid) == 176 and {c.cell_id for c in grid} <= done  # all four engines measured (seventh session)
    for engine in cfg.engines:  # every cell of an engine remeasured (e.g. on another board): a 540 s call
        cells = [c for c in grid if c.engine == engine]
        chosen, summary = within_budget(cells, 540, cfg.job_times, cfg)
        assert chosen and "without a job time" not in summary, summary  # every cell has an estimate
        assert len({(c.model, c.engine) for c in chosen}) == 1, summary  # one engine load per call this size
        cost = sum((estimate_s(t, c) or 5.0) for c in chosen) * SAFETY
        assert cost <= 540 - RESERVE_S, summary


@pytest.mark.parametrize(
    "change, message",
    [
        ({"budget_s": 540}, "budget_s needs job_times to estimate job times from"),
        ({"budget_s": 540, "job_times": ["no/such/jobs"]}, "job_times: no/such/jobs has no measure_cell/ folder"),
        ({"budget_s": 0, "job_times": ["results/benchmarks"]}, "budget_s: 0 is less than or equal to the minimum of 0"),
    ],
)
def test_bad_budget_is_one_line_before_any_gpu_time(change, message):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(change)
    with pytest.raises(ConfigError) as err:
        check_semantics(validate_schema(cfg), engines_needed=())
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_estimates_benchmark_reports_every_new_cell_and_the_jobs_that_loaded_the_engine():
    import importlib.util

    spec = importlib.util.spec_from_file_location("budget_estimates", REPO / "benchmarks" / "budget_estimates.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # against the engine comparison's jobs (five hf-paged cells, llama-3.1-8b only): a row for each of the others,
    # estimated where that folder has something to estimate from
    rows = bench.compare([str(REFERENCE / "engines-h200" / "jobs")], str(REFERENCE / "campaign" / "jobs"), "hf-paged")
    assert len(rows) == 44 - 5 and all(est is None or est > 0 for _, est, _, _ in rows)
    assert all(est is None for cell, est, _, _ in rows if cell.startswith("qwen2-7b/"))  # no qwen2-7b job there
    loaded = {cell for cell, _, _, was_loaded in rows if was_loaded}
    assert "llama-3.1-8b/hf-paged/prefill/L512" in loaded and "qwen2-7b/hf-paged/prefill/L1024" not in loaded


def test_the_estimates_benchmark_takes_batches_as_new_jobs_and_estimates_them_as_the_budget_does():
    import importlib.util

    from ctxenergy.config import load_config
    from ctxenergy.settings import Settings

    spec = importlib.util.spec_from_file_location("budget_estimates", REPO / "benchmarks" / "budget_estimates.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = [str(REFERENCE / "campaign" / "jobs"), str(REFERENCE / "engines-h200" / "jobs")]
    serving = str(REPO / "data/reference/nvidia-h100-80gb-hbm3/serving/jobs")
    settings = Settings.from_config(load_config(REPO / "config.yaml", [REPO / "config/serving.yaml"]))
    plain = dict((c, e) for c, e, _, _ in bench.compare(before, serving))
    budget = dict((c, e) for c, e, _, _ in bench.compare(before, serving, None, settings, 80e9))
    assert len(plain) == len(budget) == 23  # every batch is new; the batch-1 cells are the campaign's
    # 64 x 65,536 tokens cannot be held by an 80 GB GPU: the budget charges a cell recorded without measuring
    assert plain["llama-3.1-8b/hf-sdpa/prefill/B64/L65536"] > 1000 > budget["llama-3.1-8b/hf-sdpa/prefill/B64/L65536"]
    assert budget["llama-3.1-8b/hf-sdpa/prefill/B4/L1024"] == plain["llama-3.1-8b/hf-sdpa/prefill/B4/L1024"]
    out = (REPO / "benchmarks/results/budget_serving_estimates.txt").read_text()
    assert "23 of 23 cells estimated: 1359 s estimated, 588 s measured (0.43x)" in out


def test_the_choice_benchmark_plans_a_vllm_call_around_one_engine_start(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("budget_choice", REPO / "benchmarks" / "budget_choice.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # no cell measured yet (an empty folder): 44 vLLM cells missing, job times from the committed campaign
    cells, summary = bench.choose([str(REFERENCE / "campaign" / "jobs")], str(tmp_path), "vllm", 650)
    assert "of 44 missing cells" in summary and len(cells) >= 10
    assert {"/".join(c.split("/")[:2]) for c in cells} == {"llama-3.1-8b/vllm"}  # the longest cell's pair only


def test_a_target_sized_protocol_keeps_its_short_jobs_as_neighbours():
    from ctxenergy.budget import MEASURED_JOB_MIN_S, measured_job_min_s

    assert measured_job_min_s(replace(CONFIG.measure, repeats=5, min_window_s=2.0)) == MEASURED_JOB_MIN_S  # campaign
    fast = replace(CONFIG.measure, repeats=5, min_window_s=1.0, target_half_width_pct=1.0, min_windows=3)
    assert measured_job_min_s(fast) == 3.0
    # short cells of such a protocol (6 and 8 s) interpolate a cell between them; under the 10 s floor they did not
    times = {("llama-3.1-8b", "vllm", "prefill", 256): 6.0, ("llama-3.1-8b", "vllm", "prefill", 1024): 8.0}
    cell = Cell("llama-3.1-8b", "vllm", "prefill", 512)
    assert estimate_s(times, cell) is None
    assert estimate_s(times, cell, measured_job_min_s(fast)) == pytest.approx(math.sqrt(6.0 * 8.0))

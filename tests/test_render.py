"""The rendering layer's tables and the one lookup of a threshold that every output quotes."""

import math

import pandas as pd

from ctxenergy.analysis.scaling import crossover_row, threshold_row
from ctxenergy.numbers import fmt_ci
from ctxenergy.outputs.render import md_table, text_table


def test_a_text_table_fits_its_columns_and_right_aligns_numbers():
    table = text_table(["model", "J"], [["llama-3.1-8b", "1,234"], ["qwen2-7b", "n/a"]])
    assert table.splitlines() == [
        "model             J",
        "------------  -----",
        "llama-3.1-8b  1,234",
        "qwen2-7b        n/a",
    ]
    assert text_table(["a", "b"], [["x", "y"]], text_cols=2).splitlines()[2] == "x  y"


def test_a_markdown_table_marks_a_missing_value_and_escapes_a_pipe():
    table = md_table(["log", "command"], [[None, "a | b"], [math.nan, "c"]], aligned=False)
    assert table.splitlines() == ["| log | command |", "|---|---|", "| – | a \\| b |", "| – | c |"]
    assert md_table(["model", "J"], [["m", "1"]]).splitlines()[1] == "|:---|---:|"


def test_numbers_read_alike_in_the_analysis_and_the_outputs():
    assert fmt_ci(850.4, 801, 900.2) == "850 [801, 900]"
    assert fmt_ci(math.nan, 1, 2, missing="n/a") == "n/a" and fmt_ci(2.5, math.nan, 3) == "2.5"


def test_the_crossover_is_the_prefill_fit_of_total_energy():
    rows = [
        ("prefill", "energy_per_run_j", "crossover", 57_000.0),
        ("prefill", "dynamic_energy_per_run_j", "crossover", 40_000.0),
        ("generate", "energy_per_run_j", "crossover", 1.0),
        ("prefill", "mean_power_w", "power_plateau", math.nan),
    ]
    th = pd.DataFrame(
        [("m", "e", phase, q, name, v) for phase, q, name, v in rows],
        columns=["model", "engine", "phase", "quantity", "threshold", "value"],
    )
    assert crossover_row(th, "m", "e")["value"] == 57_000.0
    assert crossover_row(th, "m", "other") is None
    assert math.isnan(threshold_row(th, "m", "e", "prefill", "power_plateau")["value"])  # not reached: still a row

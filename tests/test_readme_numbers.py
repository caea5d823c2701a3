"""The README's headline numbers are the committed campaign's numbers: a change of either without the other fails here,
and the committed outputs are what the committed cells give."""

import re

import pandas as pd
import pytest

from conftest import REFERENCE, REPO

README = (REPO / "README.md").read_text()
CAMPAIGN = REFERENCE / "campaign"
OUTPUTS = CAMPAIGN / "outputs" / "analysis"
HEADLINE = README[README.index("## Headline"):README.index("## What it measures")]


def row(*first_cells: str) -> list[str]:
    start = "| " + " | ".join(first_cells) + " |"
    line = next(line for line in HEADLINE.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", text)]


def claim_line(claim_id: int) -> str:
    """The README's item for one of the paper's claims, its continuation lines joined."""
    text = HEADLINE[HEADLINE.index(f"\n{claim_id}. ") + 1:]
    end = re.search(r"\n(\d\. |\n)", text)
    return " ".join(text[:end.start() if end else None].split())


def test_table1_rows_are_the_campaign_prefill_cells_at_114688():
    cells = pd.read_parquet(CAMPAIGN / "cells.parquet")
    pre = cells[(cells["phase"] == "prefill") & (cells["length_tokens"] == 114688)].set_index(["model", "engine"])
    paper = (pd.read_parquet(OUTPUTS / "table1.parquet").drop_duplicates(["paper_model", "paper_engine"])
             .set_index(["model", "paper_engine"]))
    for (model, engine), c in pre.iterrows():
        _, _, latency, energy, per_token, tflops, paper_text = row(model, engine)
        if c["status"] == "oom":
            assert latency == "out of memory" and energy == "", (model, engine)
            continue
        assert numbers(latency) == [round(c[k], 2) for k in ("run_s", "run_s_ci_low", "run_s_ci_high")]
        assert numbers(energy) == [round(c[k]) for k in
                                   ("energy_per_run_j", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high")]
        assert numbers(per_token) == [round(c["energy_per_run_j"] / 114688, 4)]
        assert numbers(tflops) == [round(c["achieved_tflops"])]
        if engine in ("hf-sdpa", "vllm"):  # the paper's row beside the engine of its family
            p = paper.loc[(model, "vLLM" if engine == "vllm" else "HF")]
            assert numbers(paper_text) == [p["paper_latency_s"], p["paper_energy_j"], round(p["paper_implied_tflops"])]
    for model, name in (("llama-3.1-8b", "llama"), ("qwen2-7b", "qwen2")):
        ratio = pre.loc[(model, "hf-sdpa"), "energy_per_run_j"] / pre.loc[(model, "vllm"), "energy_per_run_j"]
        assert f"{ratio:.2f}x ({name})" in " ".join(HEADLINE.split())


def test_each_claims_verdict_and_quoted_intervals_are_the_claims_table():
    claims = pd.read_parquet(OUTPUTS / "claims.parquet")
    for claim_id, group in claims.groupby("claim_id"):
        line = claim_line(int(claim_id))
        verdicts = set(group["verdict"]) - {"not testable"}
        expected = verdicts.pop() if len(verdicts) == 1 else "mixed"
        assert f"**{expected}**" in line, (claim_id, line)
        deciding = " ".join(group["deciding"])
        for interval in re.findall(r"\d[\d.]* \[[\d., ]+\]", line):  # every "value [low, high]" quoted
            assert interval in deciding, (claim_id, interval)
    assert len(claims["claim_id"].unique()) == 6 and claim_line(6)
    flatness = " ".join(claims.loc[claims["claim_id"] == 3, "deciding"])  # claim 3 is quoted in percent
    quoted = re.findall(r"(\+?\d+) %", claim_line(3))
    assert len(quoted) == 4 and all(f"{q}%" in flatness for q in quoted), quoted


def test_output_token_costs_are_the_derived_io_table():
    io = pd.read_parquet(OUTPUTS / "io_ratio.parquet").set_index(["model", "engine", "length_tokens"]).sort_index()
    text = " ".join(HEADLINE.split())
    vllm, sdpa = (io.loc[("llama-3.1-8b", e)] for e in ("vllm", "hf-sdpa"))
    assert (f"vLLM costs {vllm.loc[1024, 'e_out_j']:.3g} J at L = 1,024 and {vllm.loc[114688, 'e_out_j']:.3g} J at "
            f"114,688 (llama; SDPA {sdpa.loc[1024, 'e_out_j']:.3g} J and {sdpa.loc[114688, 'e_out_j']:.3g} J): "
            f"{vllm.loc[1024, 'e_ratio']:.0f}x and {vllm.loc[114688, 'e_ratio']:.0f}x an input token") in text


def test_cell_counts_and_pipeline_cost_are_the_committed_ones():
    cells = pd.read_parquet(CAMPAIGN / "cells.parquet")
    counts = cells["status"].value_counts()
    text = " ".join(HEADLINE.split())
    assert len(cells) == 176 and f"{len(cells)} cells" in text
    assert (f"{counts['ok']} with energy, {counts['oom']} out of memory" in text
            and f"{counts['exceeds_context']} past the models' 131,072 positions" in text)
    overhead = (REPO / "benchmarks" / "results" / "pipeline_overhead_campaign.txt").read_text()
    ratio = re.search(r"in all, ([\d.]+)x the windows", overhead).group(1)
    assert f"{ratio}x the measured windows" in text


@pytest.mark.parametrize("table", ["table1", "claims", "io_ratio"])
def test_committed_outputs_are_what_the_committed_cells_give(tmp_path, table):
    """`publish_outputs` ran on the cells as committed: rerunning the analysis gives the same tables."""
    from ctxenergy.cli import main

    tables = sorted(str(p) for p in (CAMPAIGN / "cells").rglob("L*[0-9].parquet"))
    out = tmp_path / f"{table}.parquet"
    assert main(["analyze", str(CAMPAIGN / "cells.parquet"), "--cell-tables", *tables, "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(OUTPUTS / f"{table}.parquet"))


def test_crossover_lengths_are_the_prefill_fits():
    t = pd.read_parquet(OUTPUTS / "thresholds.parquet")
    t = t[(t["phase"] == "prefill") & (t["quantity"] == "energy_per_run_j") & (t["threshold"] == "crossover")]
    t = t.set_index(["model", "engine"])
    text = " ".join(HEADLINE.split())

    def k(v: float, digits: int = 1) -> str:
        return f"{v / 1000:.{digits}f}k"

    for engine, where in (("vllm", "under vLLM"), ("hf-sdpa", "under SDPA")):
        c = t.loc[("llama-3.1-8b", engine)]
        assert f"{k(c['value'])} [{k(c['ci_low'])}, {k(c['ci_high'])}] tokens {where}" in text \
            or f"{k(c['value'])} [{k(c['ci_low'])}, {k(c['ci_high'])}] {where}" in text, engine
    qwen = [k(t.loc[("qwen2-7b", e), "value"], 0) for e in ("vllm", "hf-sdpa")]
    assert f"qwen2 {qwen[0]} and {qwen[1]})" in text
    for engine, where in (("hf-paged", "under transformers' paged path"), ("hf-eager", "under eager attention")):
        pair = [k(t.loc[(m, engine), "value"], 0) for m in ("llama-3.1-8b", "qwen2-7b")]
        assert f"{pair[0]} and {pair[1]} {where}" in text, engine

"""The README's headline numbers are the committed campaign's numbers: a change of either without the other fails here,
and the committed outputs are what the committed cells give."""

import re

import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE, REPO

pytestmark = pytest.mark.slow


README = (REPO / "README.md").read_text()
CAMPAIGN = REFERENCE / "campaign"
OUTPUTS = CAMPAIGN / "outputs" / "analysis"
HEADLINE = README[README.index("## Headline") : README.index("## What it measures")]


def row(*first_cells: str) -> list[str]:
    start = "| " + " | ".join(first_cells) + " |"
    line = next(line for line in HEADLINE.splitlines() if line.startswith(start))
    return [c.strip() for c in line.strip("|").split("|")]


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", text)]


def claim_line(claim_id: int) -> str:
    """The README's item for one of the paper's claims, its continuation lines joined."""
    text = HEADLINE[HEADLINE.index(f"\n{claim_id}. ") + 1 :]
    end = re.search(r"\n(\d+\. |\n)", text)
    return " ".join(text[: end.start() if end else None].split())


def test_table1_rows_are_the_campaign_prefill_cells_at_114688():
    cells = pd.read_parquet(CAMPAIGN / "cells.parquet")
    pre = cells[(cells["phase"] == "prefill") & (cells["length_tokens"] == 114688)].set_index(["model", "engine"])
    paper = (
        pd.read_parquet(OUTPUTS / "table1.parquet")
        .drop_duplicates(["paper_model", "paper_engine"])
        .set_index(["model", "paper_engine"])
    )
    for (model, engine), c in pre.iterrows():
        _, _, latency, energy, dynamic, per_token, tflops, paper_text = row(model, engine)
        if c["status"] == "oom":
            assert latency == "out of memory" and energy == dynamic == "", (model, engine)
            continue
        assert numbers(latency) == [round(c[k], 2) for k in ("run_s", "run_s_ci_low", "run_s_ci_high")]
        assert numbers(energy) == [
            round(c[k]) for k in ("energy_per_run_j", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high")
        ]
        # total and dynamic differ by far more than the interval: both are shown, each labelled
        assert numbers(dynamic) == [
            round(c[k])
            for k in ("dynamic_energy_per_run_j", "dynamic_energy_per_run_j_ci_low", "dynamic_energy_per_run_j_ci_high")
        ]
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
    assert sorted(claims["claim_id"].unique()) == list(range(1, 13)) and claim_line(12)
    assert (claims["metric"] != "").all() and (claims["threshold"] != "").all()


def test_claims_numbers_without_an_interval_are_the_claims_table():
    claims = pd.read_parquet(OUTPUTS / "claims.parquet").set_index(["claim_id", "subject"])
    # claim 1: where dE/dL reaches 1.5x its minimum
    for model, L in (("llama-3.1-8b", 16384), ("qwen2-7b", 32768)):
        assert (
            f"at L = {L} under hf-sdpa and {L} under vLLM"
            in claims.loc[(1, f"{model}: hf-sdpa against vllm"), "deciding"]
        )
        assert "L = 2048 under hf-eager" in claims.loc[(1, f"{model}: hf-eager against vllm"), "deciding"]
    assert "(16,384 llama, 32,768 qwen2: refuted)" in claim_line(1) and "(2,048: confirmed)" in claim_line(1)
    # claim 2: the plateau's onsets
    onsets = claims.loc[2]
    onsets = onsets[onsets["verdict"] != "not testable"]["value"]
    assert f"from L = {onsets.min():,.0f}-{onsets.max():,.0f} on" in claim_line(2) and len(onsets) == 6
    # claim 6: the paged path's ratio
    er = pd.read_parquet(OUTPUTS / "engine_ratios.parquet").set_index(
        ["model", "phase", "length_tokens", "engine_a", "engine_b"]
    )
    paged = er.loc[("llama-3.1-8b", "prefill", 114688, "hf-paged", "vllm"), "energy_ratio"]
    assert f"only {paged:.1f}x (llama)" in claim_line(6)
    # claim 8: the input's share of a 128-token request
    for engine, name in (("vllm", "vLLM"), ("hf-sdpa", "SDPA")):
        share = claims.loc[(8, f"llama-3.1-8b / {engine}"), "value"]
        assert f"{share:.1%}" in claims.loc[(8, f"llama-3.1-8b / {engine}"), "deciding"]
        assert f"{share * 100:.1f} % ({name})" in claim_line(8)
    # claim 9: energy per FLOP, and how much it rises where it does
    vllm = claims.loc[(9, "llama-3.1-8b / vllm"), "deciding"]
    assert "from 1.15 to 1.09 pJ/FLOP" in vllm and "J/token rises 2.77x" in vllm and "690 W / 635 TFLOP/s" in vllm
    assert "vLLM llama 1.15 to 1.09 pJ/FLOP" in claim_line(9) and "rises 2.77x" in claim_line(9)
    rising = claims.loc[9]
    rising = rising[rising["verdict"] == "confirmed"]["value"]
    assert f"it rises {rising.min():.1f}-{rising.max():.1f}x" in claim_line(9)


def test_systematics_and_fit_quality_are_the_derived_tables():
    text = " ".join(HEADLINE.split())
    sy = pd.read_parquet(OUTPUTS / "systematics.parquet").set_index("systematic")
    board = sy.loc["board_spread"]
    assert (
        f"up to {board['relative_half_width']:.1%} between boards ({board['n_pairs']} pairs, "
        f"{board['n_boards']} boards)"
    ).replace("%", " %") in text
    assert f"at the cap by up to {sy.loc['power_spread', 'relative_half_width']:.1%}".replace("%", " %") in text
    assert (
        f"up to {sy.loc['host_spread_total', 'relative_half_width']:.0%} (total energy) and "
        f"{sy.loc['host_spread_dynamic', 'relative_half_width']:.0%} (above idle)"
    ).replace("%", " %") in text
    absolute = np.hypot(board["relative_half_width"], sy.loc["nvml_gain", "relative_half_width"])
    assert f"systematic ±{absolute:.1%}".replace("%", " %") in text
    assert sy.loc["nvml_gain", "relative_half_width"] == 0.05 and "(±5 %)" in text
    fits = pd.read_parquet(OUTPUTS / "fits.parquet")
    f = fits[(fits["phase"] == "prefill") & (fits["quantity"] == "energy_per_run_j")]
    main = f[f["engine"].isin(["hf-sdpa", "vllm"])]
    assert (
        f"chi²/dof is then {main['chi2_per_dof'].min():.1f}-{main['chi2_per_dof'].max():.1f} for SDPA and vLLM "
        f"({main['chi2_per_dof_stat'].min():.1f}-{main['chi2_per_dof_stat'].max():.0f} with the windows' errors "
        "alone)"
    ) in text
    paged = f[f["engine"] == "hf-paged"]
    assert (~paged["quadratic_describes"]).all() and paged["model_note"].str.startswith("no polynomial").all()
    assert "no polynomial of degree 2-4 describes transformers' paged path" in text
    assert main["quadratic_describes"].all()


def test_output_token_costs_are_the_derived_io_table():
    io = pd.read_parquet(OUTPUTS / "io_ratio.parquet").set_index(["model", "engine", "length_tokens"]).sort_index()
    text = " ".join(HEADLINE.split())
    vllm, sdpa = (io.loc[("llama-3.1-8b", e)] for e in ("vllm", "hf-sdpa"))
    assert (
        f"vLLM costs {vllm.loc[1024, 'e_out_j']:.3g} J at L = 1,024 and {vllm.loc[114688, 'e_out_j']:.3g} J at "
        f"114,688 (llama; SDPA {sdpa.loc[1024, 'e_out_j']:.3g} J and {sdpa.loc[114688, 'e_out_j']:.3g} J): "
        f"{vllm.loc[1024, 'e_ratio']:.0f}x and {vllm.loc[114688, 'e_ratio']:.0f}x an input token"
    ) in text


def test_cell_counts_and_pipeline_cost_are_the_committed_ones():
    cells = pd.read_parquet(CAMPAIGN / "cells.parquet")
    counts = cells["status"].value_counts()
    text = " ".join(HEADLINE.split())
    assert len(cells) == 176 and f"{len(cells)} cells" in text
    assert (
        f"{counts['ok']} with energy, {counts['oom']} out of memory" in text
        and f"{counts['exceeds_context']} past the models' 131,072 positions" in text
    )
    overhead = (REPO / "benchmarks" / "results" / "pipeline_overhead_campaign.txt").read_text()
    ratio = re.search(r"in all, ([\d.]+)x the windows", overhead).group(1)
    assert f"{ratio}x the measured windows" in text


@pytest.mark.parametrize("table", ["table1", "claims", "io_ratio", "fits", "thresholds", "systematics", "board_pairs"])
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

    for engine, where in (("vllm", "tokens under vLLM"), ("hf-sdpa", "under SDPA")):
        c = t.loc[("llama-3.1-8b", engine)]
        assert (
            f"{k(c['value'])} [{k(c['ci_low'])}, {k(c['ci_high'])}] (total {k(c['total_low'])}-"
            f"{k(c['total_high'])}) {where}"
        ) in text, engine
    # the two engines' L* overlap once the systematic band enters
    vllm, sdpa = t.loc[("llama-3.1-8b", "vllm")], t.loc[("llama-3.1-8b", "hf-sdpa")]
    assert vllm["total_high"] > sdpa["total_low"] and "the same within the systematic band" in text
    qwen = [k(t.loc[("qwen2-7b", e), "value"], 0) for e in ("vllm", "hf-sdpa")]
    assert f"qwen2 {qwen[0]} and {qwen[1]})" in text
    pair = [k(t.loc[(m, "hf-eager"), "value"], 0) for m in ("llama-3.1-8b", "qwen2-7b")]
    assert f"{pair[0]} and {pair[1]} under eager attention" in text


def test_flop_crossover_is_the_architectures():
    from ctxenergy.analysis.claims import flop_crossover
    from ctxenergy.analysis.derive import model_archs
    from ctxenergy.models import parameter_counts

    text = " ".join(HEADLINE.split())
    for model, where in (("llama-3.1-8b", "P / (h_attn x layers) = "), ("qwen2-7b", "(qwen2: ")):
        arch = model_archs([model])[model]
        p = parameter_counts(arch)
        quoted = (
            f"{where}{p['non_embedding'] / 1e9:.3g}e9 / ({p['heads'] * p['head_dim']} x {p['layers']}) = "
            f"{flop_crossover(arch) / 1000:.3g}k"
        )
        assert quoted in text, quoted


def test_weights_ab_numbers_are_what_its_committed_cells_give():
    """The README's same-weights paragraph: every number is in the output of benchmarks/weights_ab.py on the
    committed A/B cells, and that output is the committed one."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    import weights_ab

    lines = weights_ab.report(weights_ab.windows(weights_ab.CELLS))
    assert "\n".join(lines) + "\n" == (REPO / "docs/gpu-runs/2026-12-06-weights-ab.txt").read_text()
    text = " ".join(lines)
    para = README.split("**Same weights in both engines.**")[1].split("\n\n")[0]
    for quoted in (
        "-3.07 % [-4.03, -2.11]",
        "+2.87 % [+2.58, +3.16]",
        "1.158x",
        "1.127x [1.124, 1.131]",
        "1.134x",
        "1.094x [1.089, 1.099]",
    ):
        assert quoted in para and quoted in text, quoted
    uniform = [float(m) for m in re.findall(r"uniform\(\+-1e-3\) vs own normal\(0, 0.02\): ([-+][\d.]+) %", text)]
    normal_in_vllm = [
        float(m)
        for m in re.findall(
            r"vllm L=\d+: shared normal\(0, 0.02\) vs own uniform\(\+-1e-3\): "
            r"([-+][\d.]+) %",
            text,
        )
    ]
    low, high = min(-max(uniform), min(normal_in_vllm)), max(-min(uniform), max(normal_in_vllm))
    assert f"{low:.1f}-{high:.1f} % less" in para


def test_fault_counts_are_the_committed_fault_tables():
    """The README's fault-suite counts (now and before the fixes) are those of the committed tables."""
    text = " ".join(README[README.index("**Faults.**") :].split("\n\n")[0].split())
    now = pd.read_csv(REPO / "benchmarks" / "results" / "faults.csv")["outcome"].value_counts()
    before = pd.read_csv(REPO / "benchmarks" / "results" / "faults-baseline-main.csv")["outcome"].value_counts()
    total = int(re.search(r"injects (\d+) faults", text).group(1))
    correct, clear, ugly, silent, upstream = map(
        int,
        re.search(
            r"Now: (\d+) correct, (\d+) clear errors, (\d+) ugly, (\d+) silently wrong and (\d+) upstream", text
        ).groups(),
    )
    assert total == now.sum() == correct + clear + ugly + silent + upstream
    assert (correct, clear, ugly, silent, upstream) == tuple(
        int(now.get(k, 0)) for k in ("correct", "clear error", "ugly error", "silently wrong", "upstream")
    )
    *counts, of = map(int, re.search(r"before the fixes: (\d+) / (\d+) / (\d+) / (\d+) of (\d+)", text).groups())
    assert counts == [int(before.get(k, 0)) for k in ("correct", "clear error", "ugly error", "silently wrong")]
    assert of == before.sum()


def test_the_request_estimate_quoted_is_what_ctxenergy_estimate_gives():
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxenergy",
            "estimate",
            "--model",
            "llama-3.1-8b",
            "--engine",
            "vllm",
            "--input",
            "50000",
            "--output",
            "300",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    para = README.split("**What a request costs.**")[1].split("\n\n")[0].replace("\n", " ")
    total = re.search(r"total:\s+([\d,.]+) J\s+\[stat ([\d,.]+), ([\d,.]+)\]\s+\[total ([\d,.]+), ([\d,.]+)\]", out)
    dynamic = re.search(r"above idle:\s+([\d,.]+) J", out)
    assert (
        f"gives {total[1]} J of GPU energy in total (statistical [{total[2]}, {total[3]}], with the systematic "
        f"band [{total[4]}, {total[5]}]) and {dynamic[1]} J above idle" in para
    )


def test_the_serving_headline_is_the_committed_serving_table():
    """README's "Serving" table and sentence, read back from data/reference/.../serving/outputs/analysis."""
    serving = pd.read_parquet(REPO / "data/reference/nvidia-h100-80gb-hbm3/serving/outputs/analysis/serving.parquet")
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Serving: a batch of prompts") : readme.index("## What it measures")]

    def row(metric, b, n, phase="prefill"):
        r = serving[
            (serving["metric"] == metric)
            & (serving["batch_size"] == b)
            & (serving["length_tokens"] == n)
            & (serving["phase"] == phase)
        ]
        assert len(r) == 1, (metric, b, n)
        return r.iloc[0]

    for b, n in ((1, 256), (64, 256), (1, 1024), (64, 1024), (1, 65536)):
        r = row("e_in", b, n)
        assert f"{1e3 * r['value']:.1f} (total {1e3 * r['total_low']:.1f}-{1e3 * r['total_high']:.1f})" in section
    for n in (256, 1024):
        r = row("batch_gain", 64, n)
        assert f"{r['value']:.2f}x ({r['total_low']:.2f}-{r['total_high']:.2f})" in section
    assert not ((serving["metric"] == "e_in") & (serving["length_tokens"] == 65536) & (serving["batch_size"] > 1)).any()
    assert row("host_bound_batch", 64, 256)["value"] == 4
    r1, r64 = row("io_ratio", 1, 256, "generate"), row("io_ratio", 64, 256, "generate")
    assert f"from {r1['value']:.0f} (total {r1['total_low']:.0f}-{r1['total_high']:.0f})" in section
    assert f"to {r64['value']:.1f} (total {r64['total_low']:.1f}-{r64['total_high']:.1f})" in section

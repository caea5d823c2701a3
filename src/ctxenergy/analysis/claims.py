"""The paper's Table 1 beside ours, and each of its claims judged against our numbers.

A verdict is "confirmed", "refuted" or "not testable", always with the number that decides it. The rules:
- "~x" agrees when our 95 % interval meets [x (1 - RELATIVE_TOLERANCE), x (1 + RELATIVE_TOLERANCE)]: the paper gives
  one run per point on another GPU, so only agreement within a quarter is asked for, which still tells 850x from 250x.
- "at ~112k" means a measured L within NEAR_TABLE1 of the paper's 112,000 tokens (the default grid has 114,688).
- "from ~16k" agrees when the plateau onset's interval meets one grid step (a factor 2) either side of 16k.
- "flat" means J/token within FLAT_TOLERANCE of its median over the range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import engine_rank
from ctxenergy.analysis.paper_values import ENGINE_FAMILIES, PAPER, PAPER_MODELS
from ctxenergy.analysis.scaling import PLATEAU_FRACTION
from ctxenergy.flops import device_peaks, prefill_flops

RELATIVE_TOLERANCE = 0.25
NEAR_TABLE1 = 0.10
FLAT_TOLERANCE = 0.10
CONFIRMED, REFUTED, UNTESTABLE = "confirmed", "refuted", "not testable"


def _fmt(v: float, lo: float = np.nan, hi: float = np.nan, digits: int = 3) -> str:
    if not np.isfinite(v):
        return "n/a"
    s = f"{v:.{digits}g}"
    return f"{s} [{lo:.{digits}g}, {hi:.{digits}g}]" if np.isfinite(lo) and np.isfinite(hi) else s


def _agrees(paper: float, lo: float, hi: float) -> bool:
    return hi >= paper * (1 - RELATIVE_TOLERANCE) and lo <= paper * (1 + RELATIVE_TOLERANCE)


def near_table1(lengths) -> int | None:
    """Our L closest to the paper's ~112k tokens, if one lies within NEAR_TABLE1 of it."""
    target = PAPER["table1_length_tokens"]
    near = [int(L) for L in lengths if abs(L / target - 1) <= NEAR_TABLE1]
    return min(near, key=lambda L: abs(L - target)) if near else None


def paper_engine_ratios() -> list[dict]:
    """Energy and latency ratios HF / vLLM implied by the paper's own Table 1, per model."""
    rows = []
    t = PAPER["table1"]
    for model in dict.fromkeys(r["model"] for r in t):
        hf = next(r for r in t if r["model"] == model and r["engine"] == "HF")
        vl = next(r for r in t if r["model"] == model and r["engine"] == "vLLM")
        rows.append({"model": model, "energy_ratio": hf["energy_j"] / vl["energy_j"],
                     "latency_ratio": hf["latency_s"] / vl["latency_s"]})
    return rows


def table1(per_cell: pd.DataFrame, archs: dict | None = None) -> pd.DataFrame:
    """The paper's rows, each beside every one of our engines of the same family at ~112k (or "not measured")."""
    archs = archs or {}
    a100 = device_peaks(PAPER["device"])["bf16_tflops"]
    rows = []
    prefill = per_cell[per_cell["phase"] == "prefill"]
    for p in PAPER["table1"]:
        model = PAPER_MODELS[p["model"]]
        arch = archs.get(model)
        implied = prefill_flops(arch, PAPER["table1_length_tokens"]) / p["latency_s"] / 1e12 if arch else np.nan
        base = {"paper_model": p["model"], "paper_engine": p["engine"],
                "paper_length_tokens": PAPER["table1_length_tokens"], "paper_latency_s": p["latency_s"],
                "paper_energy_j": p["energy_j"], "paper_j_per_token": p["j_per_token"],
                "paper_implied_tflops": implied, "paper_share_of_device_peak": implied / a100, "model": model}
        ours = prefill[(prefill["model"] == model) & prefill["engine"].isin(ENGINE_FAMILIES[p["engine"]])]
        found = False
        for engine in sorted(ours["engine"].unique(), key=engine_rank):
            e = ours[ours["engine"] == engine]
            L = near_table1(e["length_tokens"])
            if L is None:
                continue
            c = e[e["length_tokens"] == L].iloc[0]
            found = True
            rows.append(dict(base, engine=engine, length_tokens=L, status=c["status"] if c["usable"] else
                             f"{c['status']} ({c['excluded_reason']})", device_name=c["device_name"],
                             **{f"{k}{s}": c[f"{col}{s}"] for k, col in (("latency_s", "run_s"),
                                                                          ("energy_j", "energy_per_run_j"),
                                                                          ("j_per_token", "energy_per_token_j"),
                                                                          ("achieved_tflops", "achieved_tflops"))
                                for s in ("", "_ci_low", "_ci_high")}))
        if not found:
            rows.append(dict(base, engine="", length_tokens=0, status="not measured", device_name=""))
    cols = ["paper_model", "paper_engine", "paper_length_tokens", "paper_latency_s", "paper_energy_j",
            "paper_j_per_token", "paper_implied_tflops", "paper_share_of_device_peak", "model", "engine",
            "length_tokens", "status", "device_name"] + [
        f"{k}{s}" for k in ("latency_s", "energy_j", "j_per_token", "achieved_tflops")
        for s in ("", "_ci_low", "_ci_high")]
    out = pd.DataFrame(rows, columns=cols)
    out["length_tokens"] = out["length_tokens"].astype("int64")
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def unusable_summary(per_cell: pd.DataFrame) -> str:
    """' (8 cells not usable: 8 no_energy)', or '' when every cell is usable."""
    bad = per_cell.loc[~per_cell["usable"], "excluded_reason"].str.split(":").str[0].value_counts()
    if bad.empty:
        return ""
    return f" ({int(bad.sum())} cells not usable: " + ", ".join(f"{n} {r}" for r, n in bad.items()) + ")"


def _row(claim: int, subject: str, verdict: str, deciding: str, value=np.nan, lo=np.nan, hi=np.nan, unit="",
         paper_value: str = "") -> dict:
    return {"claim_id": claim, "claim": PAPER["claims"][claim]["text"], "subject": subject, "paper_value": paper_value,
            "value": float(value), "ci_low": float(lo), "ci_high": float(hi), "unit": unit, "verdict": verdict,
            "deciding": deciding}


def _subjects(df: pd.DataFrame) -> list[tuple[str, str]]:
    keys = df[["model", "engine"]].drop_duplicates()
    return sorted(map(tuple, keys.to_numpy()), key=lambda k: (k[0], engine_rank(k[1])))


def _claim1(slopes: pd.DataFrame, thresholds: pd.DataFrame, why: str = "") -> list[dict]:
    rows = []
    s = slopes[(slopes["phase"] == "prefill") & (slopes["quantity"] == "energy_per_run_j")]
    for model, engine in _subjects(s):
        g = s[(s["model"] == model) & (s["engine"] == engine)].sort_values("length_low")
        subject = f"{model} / {engine}"
        if len(g) < 2:
            rows.append(_row(1, subject, UNTESTABLE, "fewer than 3 usable prefill cells: no change of dE/dL to see"))
            continue
        k = int(np.argmin(g["de_dl_j_per_token"].to_numpy()))
        lo_seg, last = g.iloc[k], g.iloc[-1]
        t = thresholds[(thresholds["model"] == model) & (thresholds["engine"] == engine)
                       & (thresholds["phase"] == "prefill") & (thresholds["quantity"] == "energy_per_run_j")
                       & (thresholds["threshold"] == "de_dl_rise")]
        rise, rlo, rhi = (t.iloc[0][["value", "ci_low", "ci_high"]].astype(float) if len(t) else (np.nan,) * 3)

        def seg(r) -> str:
            v = [r.de_dl_j_per_token * 1e3, r.de_dl_j_per_token_ci_low * 1e3, r.de_dl_j_per_token_ci_high * 1e3]
            return f"{_fmt(*v)} mJ/token on L {r.length_low}-{r.length_high}"

        if k == len(g) - 1:
            rows.append(_row(1, subject, REFUTED, f"dE/dL is lowest on the last segment ({seg(lo_seg)}): no rise "
                             "within the measured L", rise, rlo, rhi, "tokens"))
        elif last.de_dl_j_per_token_ci_low > lo_seg.de_dl_j_per_token_ci_high:
            rows.append(_row(1, subject, CONFIRMED, f"dE/dL is lowest at {seg(lo_seg)} and rises to {seg(last)}; "
                             f"it starts rising at L = {rise:.0f} (95 % of draws: {rlo:.0f}-{rhi:.0f})",
                             rise, rlo, rhi, "tokens"))
        else:
            rows.append(_row(1, subject, REFUTED, f"dE/dL at the largest L ({seg(last)}) is not above its minimum "
                             f"({seg(lo_seg)}) beyond the intervals", rise, rlo, rhi, "tokens"))
    return rows or [_row(1, "", UNTESTABLE, "no usable prefill cells" + why)]


def _claim2(per_cell: pd.DataFrame, thresholds: pd.DataFrame, why: str = "") -> list[dict]:
    rows = []
    paper = PAPER["claims"][2]["plateau_from_tokens"]
    window = (paper / 2, paper * 2)
    t = thresholds[(thresholds["phase"] == "prefill") & (thresholds["threshold"] == "power_plateau")]
    cap = thresholds[(thresholds["phase"] == "prefill") & (thresholds["threshold"] == "cap_share_at_plateau")]
    for model, engine in _subjects(t):
        r = t[(t["model"] == model) & (t["engine"] == engine)].iloc[0]
        c = cap[(cap["model"] == model) & (cap["engine"] == engine)]
        cells = per_cell[(per_cell["model"] == model) & (per_cell["engine"] == engine) & per_cell["usable"]
                         & (per_cell["phase"] == "prefill")]
        lmax = int(cells["length_tokens"].max())
        pmax = cells["mean_power_w"].max()
        limit = cells["power_limit_w"].max()
        subject = f"{model} / {engine}"
        cap_txt = (f"; {c.iloc[0]['value']:.0%} of the time at the power cap there" if len(c) else "")
        if np.isfinite(r["value"]):
            meets = r["ci_high"] >= window[0] and r["ci_low"] <= window[1]
            rows.append(_row(2, subject, CONFIRMED if meets else REFUTED,
                             f"mean power stays within {PLATEAU_FRACTION:.0%} of its maximum ({pmax:.0f} W) from "
                             f"L = {r['value']:.0f} "
                             f"(95 % of draws: {r['ci_low']:.0f}-{r['ci_high']:.0f}){cap_txt}; power limit "
                             f"{limit:.0f} W", r["value"], r["ci_low"], r["ci_high"], "tokens", f"~{paper // 1024}k"))
        elif lmax >= window[1]:
            rows.append(_row(2, subject, REFUTED, r["note"], unit="tokens", paper_value=f"~{paper // 1024}k"))
        else:
            rows.append(_row(2, subject, UNTESTABLE, f"{r['note']}; measured up to L = {lmax} only (a plateau from "
                             f"~{paper} needs L up to {window[1]:.0f})", unit="tokens",
                             paper_value=f"~{paper // 1024}k"))
    return rows or [_row(2, "", UNTESTABLE, "no usable prefill cells with power" + why)]


def _claim3(per_cell: pd.DataFrame, why: str = "") -> list[dict]:
    until = PAPER["claims"][3]["flat_until_tokens"]
    v = per_cell[(per_cell["engine"] == "vllm") & (per_cell["phase"] == "prefill") & per_cell["usable"]]
    rows = []
    for model, engine in _subjects(v):
        g = v[v["model"] == model].sort_values("length_tokens")
        low, high = g[g["length_tokens"] <= until], g[g["length_tokens"] > until]
        subject = f"{model} / {engine}"
        if len(low) < 2 or not len(high):
            rows.append(_row(3, subject, UNTESTABLE, f"needs vLLM cells at 2+ L <= {until} and one above; measured "
                             f"{', '.join(map(str, g['length_tokens']))}", paper_value=f"flat until {until // 1024}k"))
            continue
        jpt = low["energy_per_token_j"].to_numpy()
        median = float(np.median(jpt))
        spread = float(np.max(np.abs(jpt / median - 1)))
        top = high.iloc[-1]
        rise = float(top["energy_per_token_j"] / median - 1)
        ok = spread <= FLAT_TOLERANCE and rise > FLAT_TOLERANCE
        rows.append(_row(3, subject, CONFIRMED if ok else REFUTED,
                         f"J/token stays within {spread:.0%} of its median over L <= {until} (flat: within "
                         f"{FLAT_TOLERANCE:.0%}) and is {rise:+.0%} against it at L = {int(top['length_tokens'])}",
                         spread, unit="largest relative deviation", paper_value=f"flat until {until // 1024}k"))
    measured = (per_cell["engine"] == "vllm").any()
    text = "no usable vLLM prefill cells" + why if measured else "no vLLM cells measured"
    return rows or [_row(3, "", UNTESTABLE, text, paper_value=f"flat until {until // 1024}k")]


def _ratio_rows(claim: int, io: pd.DataFrame, engines: tuple, points: dict, why: str = "") -> list[dict]:
    rows = []
    usable = io[io["usable"] & io["engine"].isin(engines)]
    paper_txt = ", ".join(f"~{v:.0f}x at {k}" for k, v in points.items())
    for model, engine in _subjects(usable):
        g = usable[(usable["model"] == model) & (usable["engine"] == engine)]
        subject = f"{model} / {engine}"
        found = {}
        for where in points:
            L = 1024 if where == "1k" else near_table1(g["length_tokens"])
            hit = g[g["length_tokens"] == L] if L else g.iloc[0:0]
            if len(hit):
                found[where] = hit.iloc[0]
        if len(found) < len(points):
            have = ", ".join(str(int(x)) for x in g["length_tokens"])
            rows.append(_row(claim, subject, UNTESTABLE, f"needs E_out/E_in at {' and '.join(points)} tokens; "
                             f"measured at L = {have}", paper_value=paper_txt))
            continue
        parts, ok = [], True
        for where, paper in points.items():
            r = found[where]
            agree = _agrees(paper, r["e_ratio_per_g_ci_low"], r["e_ratio_per_g_ci_high"])
            ok &= agree
            parts.append(f"{_fmt(r['e_ratio_per_g'], r['e_ratio_per_g_ci_low'], r['e_ratio_per_g_ci_high'])}x at "
                         f"L = {int(r['length_tokens'])} ({'within' if agree else 'outside'} +-25 % of {paper:.0f}x)")
        if len(points) == 2:
            a, b = found["1k"], found["112k"]
            narrows = b["e_ratio_per_g_ci_high"] < a["e_ratio_per_g_ci_low"]
            ok &= narrows
            parts.append("narrowing" if narrows else "not narrowing beyond the intervals")
        last = list(found.values())[-1]
        rows.append(_row(claim, subject, CONFIRMED if ok else REFUTED, "; ".join(parts) + " (paper's denominator G)",
                         last["e_ratio_per_g"], last["e_ratio_per_g_ci_low"], last["e_ratio_per_g_ci_high"], "x",
                         paper_txt))
    if not io["engine"].isin(engines).any():
        none = f"no {'/'.join(engines)} cells measured"
    else:
        none = f"no usable {'/'.join(engines)} generate and prefill cells at the same L" + why
    return rows or [_row(claim, "", UNTESTABLE, none,
                         paper_value=paper_txt)]


def _claim6(ratios: pd.DataFrame) -> list[dict]:
    c = PAPER["claims"][6]
    paper_txt = f"{c['energy_ratio']}x energy, {c['latency_ratio']}x latency"
    implied = "; ".join(f"{r['model']}: {r['energy_ratio']:.2f}x energy, {r['latency_ratio']:.2f}x latency"
                        for r in paper_engine_ratios())
    rows = []
    r = ratios[(ratios["phase"] == "prefill") & ratios["engine_a"].isin(ENGINE_FAMILIES["HF"])
               & ratios["engine_b"].isin(ENGINE_FAMILIES["vLLM"])]
    for (model, a, b), g in r.groupby(["model", "engine_a", "engine_b"], sort=False):
        L = near_table1(g["length_tokens"])
        subject = f"{model}: {a} / {b}"
        if L is None:
            rows.append(_row(6, subject, UNTESTABLE, "no pair of cells at ~112k", paper_value=paper_txt))
            continue
        x = g[g["length_tokens"] == L].iloc[0]
        e_ok = _agrees(c["energy_ratio"], x["energy_ratio_ci_low"], x["energy_ratio_ci_high"])
        t_ok = _agrees(c["latency_ratio"], x["latency_ratio_ci_low"], x["latency_ratio_ci_high"])
        rows.append(_row(6, subject, CONFIRMED if e_ok and t_ok else REFUTED,
                         f"energy {_fmt(x['energy_ratio'], x['energy_ratio_ci_low'], x['energy_ratio_ci_high'])}x, "
                         f"latency {_fmt(x['latency_ratio'], x['latency_ratio_ci_low'], x['latency_ratio_ci_high'])}x"
                         f" at L = {L} (paper's Table 1 itself gives {implied})",
                         x["energy_ratio"], x["energy_ratio_ci_low"], x["energy_ratio_ci_high"], "x", paper_txt))
    return rows or [_row(6, "", UNTESTABLE, f"needs an HF and a vLLM prefill cell of one model at ~112k (paper's Table 1 "
                         f"itself gives {implied})", paper_value=paper_txt)]


def claims(per_cell: pd.DataFrame, slopes: pd.DataFrame, thresholds: pd.DataFrame, io: pd.DataFrame,
           ratios: pd.DataFrame) -> pd.DataFrame:
    c = PAPER["claims"]
    why = unusable_summary(per_cell)

    def why_for(engines) -> str:  # a claim about one engine family cites only that family's unusable cells
        return unusable_summary(per_cell[per_cell["engine"].isin(engines)])

    vllm, hf = ENGINE_FAMILIES["vLLM"], ENGINE_FAMILIES["HF"]
    rows = (_claim1(slopes, thresholds, why) + _claim2(per_cell, thresholds, why) + _claim3(per_cell, why_for(vllm))
            + _ratio_rows(4, io, vllm, {"1k": c[4]["ratio_at_1k"], "112k": c[4]["ratio_at_112k"]}, why_for(vllm))
            + _ratio_rows(5, io, hf, {"112k": c[5]["ratio_at_112k"]}, why_for(hf)) + _claim6(ratios))
    out = pd.DataFrame(rows, columns=["claim_id", "claim", "subject", "paper_value", "value", "ci_low", "ci_high",
                                      "unit", "verdict", "deciding"])
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out

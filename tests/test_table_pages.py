"""The key derived tables as small HTML pages (`ctxenergy tables`), from the committed campaign's tables."""

import html
import re

import pandas as pd
import pytest

from ctxenergy.cli import main
from ctxenergy.outputs.catalog import TABLE_PAGES, table_page_paths
from ctxenergy.paths import REPO_ROOT

ANALYSIS = REPO_ROOT / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs" / "analysis"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    paths = table_page_paths(out)
    assert main(["tables", *map(str, sorted(ANALYSIS.glob("*.parquet"))), "--out", *paths]) == 0
    return {t.name: open(p, encoding="utf-8").read() for t, p in zip(TABLE_PAGES, paths)}


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_each_key_table_is_a_self_contained_page_that_says_where_its_columns_are_described(pages):
    assert set(pages) == {"claims", "table1", "thresholds", "cost_model"}
    for name, page in pages.items():
        assert page.startswith("<!DOCTYPE html>") and "<table" in page, name
        assert not re.findall(r'(?:src|href)="(?!data:|#)', page), name  # nothing outside the page
        assert f"derived table {name}.parquet" in visible_text(page)
        assert "workflow/schemas/derived.schema.yaml" in page


def test_the_claims_page_gives_each_verdict_with_its_intervals(pages):
    claims = pd.read_parquet(ANALYSIS / "claims.parquet")
    text = visible_text(pages["claims"])
    for cid in claims["claim_id"].unique():
        assert f"({cid}) " in text
    assert pages["claims"].count("<th>total interval</th>") == claims["claim_id"].nunique()  # a table per claim
    assert 'class="t nw confirmed"' in pages["claims"] or 'class="t confirmed"' in pages["claims"]
    assert '<span class="ci">[8, 16]</span>' in pages["claims"]  # claim 1's value with its interval, kept together


def test_the_table1_thresholds_and_cost_model_pages_hold_their_rows(pages):
    assert "paper energy (J, total)" in pages["table1"] and "Llama-3.1-8B" in pages["table1"]
    assert "crossover" in pages["thresholds"] and "power_plateau" in pages["thresholds"]
    cost = pd.read_parquet(ANALYSIS / "cost_model.parquet")
    text = visible_text(pages["cost_model"])
    assert "Prefill: E(L) = a + bL + cL²" in text and "Output tokens: E_out at each measured L" in text
    assert pages["cost_model"].count("<tr>") == len(cost) + 2  # every row, under two headers


def test_an_unknown_page_is_one_line(tmp_path, capsys):
    assert main(["tables", str(ANALYSIS / "claims.parquet"), "--out", str(tmp_path / "fits.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctxenergy: ") and "claims.html" in err and len(err.strip().splitlines()) == 1
    assert main(["tables", str(ANALYSIS / "claims.parquet"), "--out", str(tmp_path / "table1.html")]) == 2
    assert "table1.parquet" in capsys.readouterr().err

"""The engine registry is the one table of engines: what it names must exist where the package and workflow look."""

from __future__ import annotations

import tomllib

import pytest

from ctxenergy.engines import Engine, make_engine
from ctxenergy.engines.registry import ENGINE_NAMES, ENGINES, REFERENCE_ENGINE, engine_rank, family
from ctxenergy.errors import EngineUnavailableError
from ctxenergy.paths import REPO_ROOT


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_each_entry_names_an_engine_class_an_extra_and_an_environment_that_exist(name):
    info = ENGINES[name]
    cls = info.load_class()
    assert issubclass(cls, Engine)
    assert cls.create.__func__ is not Engine.create.__func__, f"{cls.__name__} does not implement Engine.create"
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert info.package in " ".join(extras[info.extra])
    assert (REPO_ROOT / "envs" / f"{info.conda_env}.yaml").is_file()


def test_order_families_and_reference():
    assert [engine_rank(n) for n in ENGINE_NAMES] == list(range(len(ENGINE_NAMES)))
    assert engine_rank("not-an-engine") == len(ENGINE_NAMES)
    assert family("HF") == ("hf-eager", "hf-sdpa") and family("vLLM") == ("vllm",)
    assert REFERENCE_ENGINE in ENGINES


def test_an_engine_not_installed_is_one_line_naming_the_extra(monkeypatch):
    info = ENGINES["vllm"]
    monkeypatch.setattr(type(info), "installed", lambda self: False)
    with pytest.raises(EngineUnavailableError, match=r"pip install -e '\.\[vllm\]'"):
        make_engine("vllm", None, {})

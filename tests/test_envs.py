"""The conda environments (used with `snakemake --sdm conda`, which cannot be built here: no conda channel is
reachable) must stay consistent with pyproject.toml, and every rule must name one of them."""

import re
import tomllib

import yaml
from conftest import REPO

ENVS = sorted((REPO / "envs").glob("*.yaml"))


def dist_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def env_packages(env: dict) -> set[str]:
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            names |= {dist_name(d) for d in dep.get("pip", [])}
        else:
            names.add(dist_name(dep))
    return names


def test_envs_parse_and_pin_their_channels():
    assert {p.stem for p in ENVS} == {"hf", "vllm", "analysis"}
    for path in ENVS:
        env = yaml.safe_load(path.read_text())
        assert env["channels"][-1] == "nodefaults", path.name
        assert any(str(d).startswith("python") for d in env["dependencies"]), path.name
        assert (REPO / "envs" / f"{path.stem}.post-deploy.sh").is_file(), f"{path.stem} needs its post-deploy script"


def test_every_base_dependency_is_in_every_env():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {dist_name(d) for d in project["dependencies"]}
    for path in ENVS:
        missing = base - env_packages(yaml.safe_load(path.read_text()))
        assert not missing, f"{path.name} lacks {sorted(missing)} from pyproject's dependencies"


def test_engine_extras_match_their_envs():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    hf = env_packages(yaml.safe_load((REPO / "envs/hf.yaml").read_text()))
    vllm = env_packages(yaml.safe_load((REPO / "envs/vllm.yaml").read_text()))
    assert {dist_name(d) for d in extras["hf"]} <= hf
    assert {dist_name(d) for d in extras["vllm"]} <= vllm
    pinned = [
        d for d in yaml.safe_load((REPO / "envs/vllm.yaml").read_text())["dependencies"][-1]["pip"] if "vllm" in d
    ]
    assert pinned == [next(d for d in extras["vllm"] if d.startswith("vllm"))], "one vLLM version in both places"


def test_every_rule_that_runs_code_names_an_existing_env():
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for ref in re.findall(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            assert (smk.parent / ref).resolve().is_file(), f"{smk.name}: {ref}"

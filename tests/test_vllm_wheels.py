"""scripts/vllm_wheels.sh pack and unpack, on stand-in wheels: what `pack` cuts, `unpack` gives back as an importable
folder, and a missing or damaged part stops with one line before anything is extracted."""

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "vllm_wheels.sh"
WHEEL = "vllm-0.24.0-cp38-abi3-manylinux_2_28_x86_64.whl"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": ""}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, check=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def downloaded(tmp_path):
    """What `download` leaves: the vLLM wheel in parts, one folder each, and the dependency wheels with checksums."""
    build = tmp_path / "build"
    build.mkdir()
    wheel = build / WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("vllm/__init__.py", "__version__ = '0.24.0-standin'\n")
        # 22 kB that xz cannot shrink, so that the pack comes in several 2 kB parts
        z.writestr("vllm/blob.bin", b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(700)))
        z.writestr("vllm-0.24.0.dist-info/METADATA", "Name: vllm\nVersion: 0.24.0\n")
    dep = build / "dill-0.4.1-py3-none-any.whl"
    with zipfile.ZipFile(dep, "w") as z:  # a wheel with a .data folder, as dill's
        z.writestr("dill/__init__.py", "")
        z.writestr("dill-0.4.1.data/purelib/dill_extra.py", "X = 1\n")
        z.writestr("dill-0.4.1.data/scripts/get_objgraph", "#!/bin/sh\n")
    root = tmp_path / "repo"
    deps = root / ".whl-vllm-deps"
    deps.mkdir(parents=True)
    data = wheel.read_bytes()
    half = len(data) // 2
    for k, chunk in ((1, data[:half]), (2, data[half:])):
        (root / f".whl-vllm-part{k}").mkdir()
        (root / f".whl-vllm-part{k}" / f"{WHEEL}.part{k}").write_bytes(chunk)
    (deps / dep.name).write_bytes(dep.read_bytes())
    (deps / "vllm.sha256").write_text(f"{sha256(wheel)}  {WHEEL}\n")
    (deps / "SHA256SUMS").write_text(f"{sha256(dep)}  ./{dep.name}\n")
    return root


def test_pack_then_unpack_gives_the_installed_packages(downloaded, tmp_path):
    packed = run("pack", str(downloaded), "2K")
    assert packed.returncode == 0, packed.stderr
    folders = sorted(downloaded.glob(".whl-vllm-pack*"), key=lambda f: int(f.name.removeprefix(".whl-vllm-pack")))
    assert len(folders) >= 10 and (folders[-1] / "pack.sha256").exists()  # part10 is joined after part9
    there = tmp_path / "there"
    there.mkdir()
    for folder in folders:  # one call per part: all of them end up in one folder
        for f in folder.iterdir():
            (there / f.name).write_bytes(f.read_bytes())
    target = tmp_path / "site"
    out = run("unpack", str(there), str(target))
    assert out.returncode == 0, out.stderr
    assert "vllm 0.24.0-standin in" in out.stdout
    assert (target / "dill_extra.py").exists() and not list(target.glob("*.data"))  # purelib at the top, as pip does


def test_a_missing_or_damaged_part_stops_with_one_line(downloaded, tmp_path):
    assert run("pack", str(downloaded), "2K").returncode == 0
    there = tmp_path / "there"
    there.mkdir()
    for folder in downloaded.glob(".whl-vllm-pack*"):
        for f in folder.iterdir():
            (there / f.name).write_bytes(f.read_bytes())
    (there / "vllm-site.tar.xz.part2").rename(tmp_path / "aside")
    missing = run("unpack", str(there), str(tmp_path / "site"))
    assert missing.returncode != 0 and missing.stderr.strip().endswith("vllm-site.tar.xz.part2 is missing")
    assert len(missing.stderr.strip().splitlines()) == 1 and not (tmp_path / "site").exists()
    (tmp_path / "aside").rename(there / "vllm-site.tar.xz.part2")
    damaged = bytearray((there / "vllm-site.tar.xz.part1").read_bytes())
    damaged[100] ^= 0xFF
    (there / "vllm-site.tar.xz.part1").write_bytes(bytes(damaged))
    bad = run("unpack", str(there), str(tmp_path / "site"))
    assert bad.returncode != 0 and "FAILED" in bad.stdout + bad.stderr and not (tmp_path / "site").exists()


def test_pack_refuses_a_wheel_whose_checksum_differs(downloaded):
    (downloaded / ".whl-vllm-deps" / "vllm.sha256").write_text(f"{'0' * 64}  {WHEEL}\n")
    out = run("pack", str(downloaded), "2K")
    assert out.returncode != 0 and not list(downloaded.glob(".whl-vllm-pack*"))


def test_pack_takes_a_relative_folder(downloaded):
    """`pack .` from the repository root (the documented call) once failed: its checksum steps run from other
    folders, where a relative path to the wheels no longer points at them."""
    out = subprocess.run(["bash", str(SCRIPT), "pack", ".", "2K"], cwd=downloaded, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list(downloaded.glob(".whl-vllm-pack*/pack.sha256"))

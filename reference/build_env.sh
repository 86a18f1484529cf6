#!/usr/bin/env bash
# Build the upstream reference environment (mmcv-full 1.7.2 / mmdet 2.28.2 / mmrotate 0.3.4 on
# torch 2.0.1, CPU) in a throw-away folder outside the checkout. Idempotent: every step leaves a
# stamp holding the hash of its inputs and is skipped when the stamp matches.
#
# Variables (all optional):
#   REFERENCE_ENV     where the environment lives   (default ~/.cache/qgis-unravel/reference-env)
#   REFERENCE_PYTHON  a CPython 3.11 interpreter    (default: python3.11 on PATH, else pyenv's 3.11.7)
#   UNRAVELNET_SRC    git URL, bare git dir or checkout of guue/Unravelnet
#   LEGNET_SRC        git URL, bare git dir or checkout of AeroVILab-AHU/LEGNet
#   REFERENCE_JOBS    parallel compile jobs for mmcv-full's C++ ops (default: number of cores)
#
# Usage: build_env.sh [STEP...]   (default: all of venv packages mmcv sources check, in order)
#
# The project never imports anything from this environment; only reference/*.py run in it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=pins.sh
source "$HERE/pins.sh"

ENV_DIR="${REFERENCE_ENV:-$HOME/.cache/qgis-unravel/reference-env}"
VENV="$ENV_DIR/venv"
STAMPS="$ENV_DIR/stamps"
SRC_DIR="$ENV_DIR/src"
PKG_DIR="$ENV_DIR/pkg"          # holds the patched backbone package `ref_backbones`
CONFIG_DIR="$ENV_DIR/configs"   # upstream configs, extracted at the pinned commits
UNRAVELNET_SRC="${UNRAVELNET_SRC:-https://github.com/guue/Unravelnet.git}"
LEGNET_SRC="${LEGNET_SRC:-https://github.com/AeroVILab-AHU/LEGNet.git}"
JOBS="${REFERENCE_JOBS:-$(nproc)}"

MMCV_CFLAGS="${MMCV_CFLAGS:--O0 -g0 -Winvalid-pch}"

log() { printf '[reference %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

find_python() {
    if [[ -n "${REFERENCE_PYTHON:-}" ]]; then echo "$REFERENCE_PYTHON"; return; fi
    if command -v python3.11 >/dev/null 2>&1; then command -v python3.11; return; fi
    local candidate
    for candidate in "$HOME"/.pyenv/versions/3.11*/bin/python3.11; do
        if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
    done
    echo "No Python 3.11 found: install one (e.g. pyenv install 3.11.7) or set REFERENCE_PYTHON." >&2
    exit 1
}

# stamp_ok NAME KEY: true when step NAME already ran with inputs KEY.
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }

PIP() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

step_venv() {
    local py; py="$(find_python)"
    local key; key="$("$py" -c 'import sys; print(sys.version.split()[0])')"
    [[ "$key" == 3.11.* ]] || { echo "Need Python 3.11, $py is $key" >&2; exit 1; }
    if stamp_ok venv "$key" && [[ -x "$VENV/bin/python" ]]; then return; fi
    log "virtual environment with $py ($key) in $VENV"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
    PIP install -q "pip==$PIP_VERSION" "setuptools==$SETUPTOOLS_VERSION" "wheel==$WHEEL_VERSION"
    stamp_set venv "$key"
}

step_packages() {
    # The lock pins the whole closure with sha256 sums; pip refuses any file whose hash differs.
    local key; key="$(cat "$HERE/requirements.lock" | sha256sum | cut -c1-64)"
    if stamp_ok packages "$key"; then return; fi
    log "installing the pinned packages (hash-checked, no dependency resolution)"
    # The machine-wide constraints file (if any) must not override the lock.
    PIP_CONSTRAINT= PIP install --no-deps --require-hashes -r "$HERE/requirements.lock"
    stamp_set packages "$key"
}

step_mmcv() {
    local key="mmcv-full==$MMCV_VERSION $MMCV_SDIST_SHA256"
    if stamp_ok mmcv "$key" && "$VENV/bin/python" -c 'import mmcv.ops' 2>/dev/null; then return; fi
    local sdist="$ENV_DIR/sdist/mmcv-full-$MMCV_VERSION.tar.gz"
    if [[ ! -f "$sdist" ]] || ! echo "$MMCV_SDIST_SHA256  $sdist" | sha256sum -c --quiet; then
        mkdir -p "$ENV_DIR/sdist"
        curl -fsSL -o "$sdist" "$MMCV_SDIST_URL"
    fi
    echo "$MMCV_SDIST_SHA256  $sdist" | sha256sum -c --quiet
    # The compiled wheel is kept, so rebuilding the venv does not recompile.
    local wheel_dir="$ENV_DIR/wheels/mmcv-$MMCV_SDIST_SHA256"
    if ! ls "$wheel_dir"/mmcv_full-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        log "compiling mmcv-full $MMCV_VERSION with CPU ops ($JOBS jobs; 10-30 min on 2 busy cores)"
        local src="$ENV_DIR/build/mmcv-full-$MMCV_VERSION"
        rm -rf "$src"; mkdir -p "$ENV_DIR/build"
        tar -xzf "$sdist" -C "$ENV_DIR/build"
        # No CUDA: FORCE_CUDA unset and CUDA_HOME empty; MMCV_WITH_OPS=1 builds the C++ CPU kernels.
        # -O0 -g0: no optimiser and no debug info, several times faster to compile. GCC keeps
        # IEEE float semantics at every -O level (no FMA contraction on baseline x86-64, no
        # reassociation without -ffast-math), so the kernels compute the same numbers.
        export CFLAGS="$MMCV_CFLAGS" MMCV_WITH_OPS=1 MAX_JOBS="$JOBS" CUDA_HOME= PIP_CONSTRAINT=
        unset FORCE_CUDA
        "$VENV/bin/python" "$HERE/mmcv_pch.py" "$src"   # a build cache only, see the script
        "$VENV/bin/python" -m pip wheel --no-deps --no-build-isolation -w "$wheel_dir" "$src"
        rm -rf "$src"
    fi
    PIP_CONSTRAINT= PIP install --no-deps --force-reinstall "$wheel_dir"/mmcv_full-"$MMCV_VERSION"-*.whl
    "$VENV/bin/python" -c 'import mmcv.ops; mmcv.ops.nms_rotated'
    stamp_set mmcv "$key"
}

# git_dir_for SRC NAME: a git directory for SRC (a bare dir, a checkout, or a URL cloned once).
git_dir_for() {
    local src="$1" name="$2"
    if [[ -d "$src" ]]; then
        if git --git-dir="$src" rev-parse --git-dir >/dev/null 2>&1; then echo "$src"; return; fi
        if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then git -C "$src" rev-parse --absolute-git-dir; return; fi
        echo "$src is neither a git checkout nor a bare git directory" >&2; exit 1
    fi
    local bare="$SRC_DIR/$name.git"
    if [[ ! -d "$bare" ]]; then
        log "cloning $src"
        git clone --quiet --bare "$src" "$bare"
    fi
    echo "$bare"
}

# take_file GITDIR COMMIT PATH SHA256 DEST: one file of a repository at a commit, checksum-checked.
take_file() {
    local gitdir="$1" commit="$2" path="$3" sha="$4" dest="$5"
    git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null \
        || { echo "commit $commit not in $gitdir: update the mirror" >&2; exit 1; }
    git --git-dir="$gitdir" show "$commit:$path" > "$dest"
    echo "$sha  $dest" | sha256sum -c --quiet \
        || { echo "checksum mismatch for $path at $commit" >&2; exit 1; }
}

step_sources() {
    local key="$UNRAVELNET_COMMIT $UNRAVELNET_SHA256 $LEGNET_COMMIT $LEGNET_SHA256 $(sha256sum "$HERE/patch_backbones.py" | cut -c1-64)"
    if stamp_ok sources "$key" && [[ -f "$PKG_DIR/ref_backbones/unravelnet.py" ]]; then return; fi
    log "backbone sources at pinned commits"
    mkdir -p "$SRC_DIR" "$PKG_DIR/ref_backbones"
    local ugit lgit
    ugit="$(git_dir_for "$UNRAVELNET_SRC" Unravelnet)"
    lgit="$(git_dir_for "$LEGNET_SRC" LEGNet)"
    take_file "$ugit" "$UNRAVELNET_COMMIT" "$UNRAVELNET_PATH" "$UNRAVELNET_SHA256" "$SRC_DIR/unravelnet.py"
    take_file "$lgit" "$LEGNET_COMMIT" "$LEGNET_PATH" "$LEGNET_SHA256" "$SRC_DIR/legnet.py"
    # Configs: mmrotate's _base_ files and the papers' detector configs, as published.
    rm -rf "$CONFIG_DIR"; mkdir -p "$CONFIG_DIR"
    git --git-dir="$ugit" archive "$UNRAVELNET_COMMIT" configs/_base_ configs/unravelnet | tar -x -C "$CONFIG_DIR" --strip-components=1
    git --git-dir="$lgit" archive "$LEGNET_COMMIT" configs/legnet | tar -x -C "$CONFIG_DIR" --strip-components=1
    # Device-neutral edits, applied here in the throw-away environment only.
    "$VENV/bin/python" "$HERE/patch_backbones.py" "$SRC_DIR" "$PKG_DIR/ref_backbones"
    # Make `import ref_backbones` work inside the venv.
    local site; site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$PKG_DIR" > "$site/qgis_unravel_reference.pth"
    stamp_set sources "$key"
}

step_check() {
    log "checking the environment"
    "$VENV/bin/python" - <<'PY'
import torch, numpy, mmcv, mmdet, mmrotate
import mmcv.ops
import ref_backbones  # registers UnravelNet and LWEGNet
from mmrotate.models.builder import ROTATED_BACKBONES
assert {'UnravelNet', 'LWEGNet'} <= set(ROTATED_BACKBONES.module_dict), 'backbones not registered'
print('torch', torch.__version__, 'numpy', numpy.__version__, 'mmcv', mmcv.__version__,
      'mmdet', mmdet.__version__, 'mmrotate', mmrotate.__version__)
PY
}

main() {
    mkdir -p "$ENV_DIR"
    local steps=("$@")
    [[ ${#steps[@]} -gt 0 ]] || steps=(venv packages mmcv sources check)
    local step
    for step in "${steps[@]}"; do
        case "$step" in
            venv|packages|mmcv|sources|check) "step_$step" ;;
            *) echo "unknown step '$step' (venv, packages, mmcv, sources, check)" >&2; exit 2 ;;
        esac
    done
    echo "$VENV/bin/python"
}

main "$@"

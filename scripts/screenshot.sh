#!/usr/bin/env bash
# Retake docs/screenshot.png: the real QGIS desktop under Xvfb, the plugin installed from its zip
# into a throw-away profile, the dialog run with the demo model on the demo's example scene.
# QGIS starts in a scratch folder, never in the checkout, as a user's QGIS would.
# Usage: scripts/screenshot.sh [OUT.png]   (after `make setup`; takes about a minute)
#        SHOT_MODE=setup scripts/screenshot.sh docs/screenshot-setup.png   ("Set up PyTorch…" run
#        for real into a scratch environment; a few minutes)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(realpath -m "${1:-$repo/docs/screenshot.png}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
py="$repo/.venv/bin/python"

zip="$("$py" "$repo/scripts/build_plugin.py" --out "$work")"
plugins="$work/cfg/profiles/default/python/plugins"
mkdir -p "$plugins" "$work/cfg/profiles/default/QGIS"
"$py" -m zipfile -e "$zip" "$plugins"
printf '[PythonPlugins]\nqgis_unravel=true\n' > "$work/cfg/profiles/default/QGIS/QGIS3.ini"

raster="$("$py" -c "
import sys; from pathlib import Path
from qgis_unravel.app.demo import example_scene
print(example_scene(Path(sys.argv[1]))[0])" "$work/scene")"

# Detect: the worker runs in the project's environment (SHOT_PYTHON, which has torch).
# Set-up: a scratch environment, with the torch release this machine's package index holds.
mode="${SHOT_MODE:-detect}"
shot_python="$py"
[ "$mode" = setup ] && shot_python=""
cd "$work"
SHOT_MODE="$mode" QGIS_UNRAVEL_ENV="$work/env/worker-env" \
    QGIS_UNRAVEL_TORCH="${QGIS_UNRAVEL_TORCH:-torch==2.13.0}" \
    QGIS_UNRAVEL_TORCH_INDEX="${QGIS_UNRAVEL_TORCH_INDEX:-pypi}" \
    SHOT_OUT="$out" SHOT_RASTER="$raster" SHOT_PYTHON="$shot_python" QGIS_CUSTOM_CONFIG_PATH="$work/cfg" \
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
    qgis --noversioncheck --nologo \
    --code "$repo/scripts/screenshot_startup.py" > "$work/qgis.log" 2>&1 || true
grep -E "SHOT|TASK|Error|Traceback" "$work/qgis.log" || tail -20 "$work/qgis.log"
test -s "$out" && echo "wrote $out"

#!/usr/bin/env bash
# Retake docs/screenshot.png: the real QGIS desktop under Xvfb, the plugin installed from its zip
# into a throw-away profile, the dialog run with the demo model on the demo's example scene.
# Usage: scripts/screenshot.sh [OUT.png]   (after `make setup`; takes about a minute)
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

# The worker runs in the project's environment (SHOT_PYTHON), where the demo weights are.
SHOT_OUT="$out" SHOT_RASTER="$raster" SHOT_PYTHON="$py" QGIS_CUSTOM_CONFIG_PATH="$work/cfg" \
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
    qgis --noversioncheck --nologo \
    --code "$repo/scripts/screenshot_startup.py" 2>&1 | grep -E "SHOT|TASK|Error" || true
test -s "$out" && echo "wrote $out"

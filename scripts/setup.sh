#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: Debian packages, then the project venv.
# A second run that finds everything in place returns within seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(qgis python3-qgis qgis-providers xvfb python3-venv python3-gdal
                 python3-rasterio python3-pyproj python3-shapely python3-platformdirs
                 python3-matplotlib)
VENV=.venv
STAMP="$VENV/.setup-stamp"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The venv sees Debian's site-packages (qgis, osgeo, rasterio, numpy 1.x). numpy is held at
# the system's version: numpy 2 would break osgeo.gdal_array inside QGIS.
want="$(sha256sum setup.py scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
sysnumpy="$(/usr/bin/python3 -c 'import numpy; print(numpy.__version__)')"
constraints="$VENV/constraints.txt"
printf 'numpy==%s\n' "$sysnumpy" > "$constraints"
echo "setup: installing torch==2.13.0 and the package into $VENV (numpy held at $sysnumpy)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" "torch==2.13.0"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$constraints" -e ".[test,cluster]"
"$VENV/bin/python" -c "import numpy, torch, rasterio, qgis.core, distributed, geopandas, pyarrow, pystac; assert numpy.__version__ == '$sysnumpy'"
echo "$want" > "$STAMP"

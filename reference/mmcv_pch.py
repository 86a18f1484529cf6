"""Precompile the header that most of mmcv-full's C++ sources include first.

Only a build-time cache: 58 of mmcv-full 1.7.2's 73 C++ files start with
``#include "pytorch_cpp_helper.hpp"`` (which pulls in all of ``torch/extension.h``); with a
``.gch`` beside it, GCC skips re-parsing torch's headers for each file, which cuts the compile
several times on a busy 2-core machine. The flags must be the ones ``setup.py build_ext`` will
use (macros included, quotes and all), or GCC silently ignores the cache (``-Winvalid-pch`` in
CFLAGS makes that visible); either way the compiled code is the same.

Usage (with the reference venv's Python, CFLAGS as for the build): mmcv_pch.py SOURCE_DIR
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def compile_flags(source: Path) -> list:
    from torch.utils.cpp_extension import include_paths

    cflags = " ".join(
        f for f in (sysconfig.get_config_var("CFLAGS"), os.environ.get("CFLAGS", ""),
                    sysconfig.get_config_var("CCSHARED")) if f
    ).split()
    includes = [source / "mmcv/ops/csrc/common", *include_paths(),
                Path(sys.prefix) / "include", sysconfig.get_paths()["include"]]
    defines = ["-std=c++17", "-DTORCH_API_INCLUDE_EXTENSION_H", '-DPYBIND11_COMPILER_TYPE="_gcc"',
               '-DPYBIND11_STDLIB="_libstdcpp"', '-DPYBIND11_BUILD_ABI="_cxxabi1011"',
               "-DTORCH_EXTENSION_NAME=_ext", "-D_GLIBCXX_USE_CXX11_ABI=0"]
    return cflags + [f"-I{p}" for p in includes] + defines


def main(source_dir: str) -> None:
    source = Path(source_dir).resolve()
    header = source / "mmcv/ops/csrc/common/pytorch_cpp_helper.hpp"
    cmd = ["c++", *compile_flags(source), "-x", "c++-header", str(header), "-o", f"{header}.gch"]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main(sys.argv[1])

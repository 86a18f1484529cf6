"""Regenerate the project's golden data with the upstream reference stack.

Run by ``make golden`` with the reference environment's Python (see README.md here):

    ~/.cache/qgis-unravel/reference-env/venv/bin/python reference/generate.py --out tests/golden

``--only`` picks parts (ops, keys, unravelnet, legnet, training); ``training`` needs the
UnravelNet weights and so also runs ``unravelnet``. The MANIFEST is rewritten each time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

PARTS = ("ops", "keys", "unravelnet", "legnet", "training")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="golden folder to (re)write")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {PARTS}")
    args = parser.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {PARTS}")
    if "training" in parts and "unravelnet" not in parts:
        parts.insert(0, "unravelnet")

    import torch
    from refgen import detector, manifest, models, ops, training
    from refgen.common import write_key_list

    torch.set_num_threads(2)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    state_dict = None
    if "ops" in parts:
        ops.generate(out)
    if "unravelnet" in parts:
        info, state_dict = detector.generate("unravelnet", out, scene_seed=0, stem="reduced_model")
        print(f"unravelnet: {info['n_dets']} detections at score_thr {info['score_thr']}")
    if "training" in parts:
        info = training.generate(out / "training", state_dict)
        print("training losses:", info["losses"])
    if "legnet" in parts:
        info, _ = detector.generate("legnet", out / "legnet", scene_seed=1, stem="legnet_reduced_model")
        print(f"legnet: {info['n_dets']} detections at score_thr {info['score_thr']}")
    if "keys" in parts:
        for variant in ("tiny", "small"):
            keys = models.full_state_dict("unravelnet", variant)
            write_key_list(out / f"state_dict_keys_{variant}.txt", keys)
            write_key_list(out / "legnet" / f"state_dict_keys_legnet_{variant}.txt",
                           models.full_state_dict("legnet", variant))
    manifest.write(out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"golden data in {out}: {total / 1e6:.2f} MB, {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

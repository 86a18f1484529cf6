"""Imaging defects for low-quality imagery: haze, blur, sensor noise, exposure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .noise import gaussian_blur, value_noise


@dataclass(frozen=True)
class Degradation:
    """How bad one scene's imaging is; drawn per scene from the seed."""

    blur_sigma: float
    noise_std: float
    haze: float
    gain: float
    offset: float

    @staticmethod
    def sample(rng: np.random.Generator) -> Degradation:
        return Degradation(
            blur_sigma=float(rng.choice([0.0, rng.uniform(0.4, 1.4)])),
            noise_std=float(rng.uniform(1.0, 8.0)),
            haze=float(rng.choice([0.0, rng.uniform(0.1, 0.4)], p=[0.6, 0.4])),
            gain=float(rng.uniform(0.85, 1.15)),
            offset=float(rng.uniform(-12, 12)),
        )


def apply(rng: np.random.Generator, img: np.ndarray, deg: Degradation) -> np.ndarray:
    """Haze (patchy, towards bluish white), then blur, exposure and noise; returns uint8."""
    size = img.shape[:2]
    out = img
    if deg.haze > 0:
        patch = (value_noise(rng, size, cell=size[0] / 2, octaves=2) + 1) / 2
        alpha = (deg.haze * (0.5 + patch))[..., None].clip(0, 0.8)
        out = out * (1 - alpha) + np.array([210.0, 215.0, 225.0]) * alpha
    out = gaussian_blur(out, deg.blur_sigma)
    out = out * deg.gain + deg.offset
    out = out + rng.normal(0, deg.noise_std, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)

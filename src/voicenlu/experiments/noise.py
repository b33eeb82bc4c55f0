"""Noise mixed into clean recordings at a chosen SNR, as the Picovoice speech-to-intent
benchmark mixes it: how ``benchmarks/speech.py`` measures the recogniser's robustness."""

from __future__ import annotations

import numpy as np

FRAME = 2048


def max_frame_energy(samples: np.ndarray, frame: int = FRAME) -> float:
    """The largest sum of squares over consecutive non-overlapping frames of ``frame`` samples."""
    n = len(samples) // frame
    if n == 0:
        return float(np.sum(samples.astype(np.float64) ** 2))
    frames = samples[: n * frame].astype(np.float64).reshape(n, frame)
    return float((frames**2).sum(axis=1).max())


def mix_noise(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """Speech plus a random excerpt of noise at ``snr_db``, normalised to half full scale.

    The noise is scaled by sqrt(E_speech / (E_noise * 10^(snr/10))), E being each signal's
    maximum frame energy, as the Picovoice speech-to-intent benchmark mixes.
    """
    if len(noise) <= len(speech):
        raise ValueError("the noise must be longer than the speech")
    start = int(rng.integers(0, len(noise) - len(speech)))  # upstream: randint(0, n - m)
    excerpt = noise[start : start + len(speech)].astype(np.float64)
    speech = speech.astype(np.float64)
    scale = np.sqrt(max_frame_energy(speech) / (max_frame_energy(excerpt) * 10 ** (snr_db / 10)))
    mixed = speech + scale * excerpt
    peak = np.abs(mixed).max()
    return (0.5 * mixed / peak if peak > 0 else mixed).astype(np.float32)

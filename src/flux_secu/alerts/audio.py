"""Audio helpers for the speaker drivers: read a WAV, resample to 8 kHz mono, apply gain, G.711 µ-law.

Pure functions on numpy arrays, no I/O besides :func:`read_wav` / :func:`write_wav`. Samples are float32
in [-1, 1] between the steps. Telephone-grade speakers (SIP horns, Axis network speakers' ``audio/basic``)
take G.711 µ-law at 8 kHz mono: one byte per sample, 8,000 bytes a second.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

TELEPHONE_RATE = 8000
REPEAT_GAP_S = 0.6
"""Silence between two repeats of a message, so that they do not run into each other."""

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


class AudioError(Exception):
    """A file that cannot be used as a warning (not a WAV, unsupported sample format)."""


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Return (mono float32 samples in [-1, 1], sample rate); channels are averaged."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"cannot read WAV {path.name}: {exc}") from None
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints & 0x800000, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    else:
        raise AudioError(f"unsupported sample width {width} bytes in {path.name}")
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels).mean(axis=1)
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate} in {path.name}")
    return data.astype(np.float32), rate


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def resample(samples: np.ndarray, rate: int, target: int = TELEPHONE_RATE) -> np.ndarray:
    """Band-limited resampling through the FFT: drops what lies above the target's Nyquist frequency.

    Exact for a whole clip of a few seconds (the signal is treated as one period; warnings start and end
    in silence, so the wrap-around is inaudible).
    """
    if rate == target or len(samples) == 0:
        return samples.astype(np.float32)
    n_out = max(1, round(len(samples) * target / rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = n_out // 2 + 1
    if len(spectrum) >= keep:
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - len(spectrum), dtype=spectrum.dtype)])
    out = np.fft.irfft(spectrum, n=n_out) * (n_out / len(samples))
    return out.astype(np.float32)


def apply_gain(samples: np.ndarray, gain: float) -> np.ndarray:
    """Multiply and clip to [-1, 1] (a gain above 1 saturates rather than wrapping around)."""
    return np.clip(samples * np.float32(gain), -1.0, 1.0).astype(np.float32)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """G.711 µ-law of 16-bit linear samples (0 -> 0xFF, -1 -> 0x7F, +32767 -> 0x80, -32768 -> 0x00).

    Negative samples take their one's complement, as in the ITU-T G.191 reference coder (Sun's coder,
    which ``audioop`` uses, rounds some negative boundaries one step differently).
    """
    x = pcm.astype(np.int32)
    negative = x < 0
    magnitude = np.minimum(np.where(negative, ~x, x), _ULAW_CLIP) + _ULAW_BIAS
    # Segment (exponent) = position of the highest set bit above bit 7, 0..7.
    exponent = np.zeros_like(magnitude)
    for seg in range(1, 8):
        exponent = np.where(magnitude >= (0x80 << seg), seg, exponent)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = (exponent << 4) | mantissa | np.where(negative, 0x80, 0)
    return (~code & 0xFF).astype(np.uint8).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """16-bit linear samples of G.711 µ-law bytes (the inverse of :func:`ulaw_encode`, up to quantisation)."""
    code = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def telephone_ulaw(path: Path, *, repeat: int = 1, gain: float = 1.0,
                   gap_s: float = REPEAT_GAP_S) -> bytes:
    """The WAV at ``path`` as 8 kHz mono µ-law, ``repeat`` times with ``gap_s`` of silence in between."""
    samples, rate = read_wav(path)
    once = ulaw_encode(to_int16(apply_gain(resample(samples, rate), gain)))
    gap = b"\xff" * round(gap_s * TELEPHONE_RATE)
    return gap.join([once] * max(1, repeat))

"""Resemblyzer's GE2E voice encoder in numpy: 40-band power mel (25 ms / 10 ms) -> 3-layer LSTM (256)
-> linear + ReLU -> L2-normalised 256-d embedding, batched over windows of 1.6 s (160 frames).

The front end follows ``librosa.feature.melspectrogram`` with the encoder's parameters (periodic Hann,
centred frames, Slaney mel filters, power 2); each request's audio is first raised to -30 dBFS as
Resemblyzer's ``preprocess_wav`` does (only raised, never lowered).
"""

from __future__ import annotations

import numpy as np

from whisper_triton.protocol import SAMPLE_RATE

N_FFT = 400
HOP = 160
N_MELS = 40
WINDOW_FRAMES = 160  # 1.6 s: the partial-utterance length the encoder was trained on
WINDOW_SAMPLES = WINDOW_FRAMES * HOP
TARGET_DBFS = -30.0


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular filters, as ``librosa.filters.mel`` (htk=False, norm='slaney')."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.astype(np.float32)


_FILTERS = mel_filters()
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def normalize_volume(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    """Raise quiet audio to ``target_dbfs`` RMS (never lowered), as the encoder's training data was."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    if rms <= 1e-8:
        return audio
    change = target_dbfs - 20 * np.log10(rms)
    return audio * np.float32(10 ** (change / 20)) if change > 0 else audio


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """[frames, 40] power mel of 16 kHz audio, frame i centred on sample i * 160."""
    padded = np.pad(np.asarray(audio, dtype=np.float32), N_FFT // 2)
    count = 1 + (len(padded) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(padded, shape=(count, N_FFT),
                                             strides=(padded.strides[0] * HOP, padded.strides[0]))
    power = np.abs(np.fft.rfft(frames * _HANN, axis=1)) ** 2
    return (power.astype(np.float32) @ _FILTERS.T).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


class GE2EEncoder:
    """The network; ``embed`` takes [batch, 160, 40] mel windows and returns [batch, 256] unit vectors."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.layers = []
        for layer in range(3):
            w_ih = arrays[f"lstm.weight_ih_l{layer}"].astype(np.float32)
            w_hh = arrays[f"lstm.weight_hh_l{layer}"].astype(np.float32)
            bias = (arrays[f"lstm.bias_ih_l{layer}"] + arrays[f"lstm.bias_hh_l{layer}"]).astype(np.float32)
            self.layers.append((np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias))
        self.linear_w = np.ascontiguousarray(arrays["linear.weight"].T.astype(np.float32))
        self.linear_b = arrays["linear.bias"].astype(np.float32)
        self.hidden = self.layers[0][1].shape[0]

    def embed(self, mels: np.ndarray) -> np.ndarray:
        x = np.asarray(mels, dtype=np.float32)
        batch, steps, _ = x.shape
        h = np.zeros((batch, self.hidden), np.float32)
        for w_ih, w_hh, bias in self.layers:
            gates_x = (x.reshape(batch * steps, -1) @ w_ih + bias).reshape(batch, steps, -1)
            h = np.zeros((batch, self.hidden), np.float32)
            c = np.zeros((batch, self.hidden), np.float32)
            outputs = np.empty((batch, steps, self.hidden), np.float32)
            n = self.hidden
            for t in range(steps):  # PyTorch gate order: input, forget, cell, output
                gates = gates_x[:, t] + h @ w_hh
                i, f = _sigmoid(gates[:, :n]), _sigmoid(gates[:, n:2 * n])
                g, o = np.tanh(gates[:, 2 * n:3 * n]), _sigmoid(gates[:, 3 * n:])
                c = f * c + i * g
                h = o * np.tanh(c)
                outputs[:, t] = h
            x = outputs
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        return raw / np.maximum(norm, 1e-8)

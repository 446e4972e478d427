"""Diarization error rate, the standard definition (as NIST md-eval and pyannote.metrics score it).

DER = (missed speech + false alarm + speaker confusion) / reference speech, over time, with overlapped
speech scored (each speaker of an overlap counts), a ``collar`` (default 0.25 s) on each side of every
reference turn boundary left out of scoring, and the one-to-one mapping of system speakers to reference
speakers that maximises their overlap. Computed on a 10 ms grid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable

import numpy as np

STEP = 0.01
Turns = Iterable[tuple[float, float, str]]  # (start, end, speaker)


@dataclass(frozen=True)
class DERResult:
    der: float
    missed: float  # seconds
    false_alarm: float
    confusion: float
    total: float  # reference speech scored, seconds (a two-speaker overlap counts twice)
    mapping: dict[str, str]  # system speaker -> reference speaker


def _grid(turns: list[tuple[float, float, str]], speakers: list[str], frames: int) -> np.ndarray:
    grid = np.zeros((frames, len(speakers)), dtype=bool)
    index = {s: i for i, s in enumerate(speakers)}
    for start, end, speaker in turns:
        grid[int(round(start / STEP)):int(round(end / STEP)), index[speaker]] = True
    return grid


def _best_mapping(overlap: np.ndarray) -> list[tuple[int, int]]:
    """(ref, sys) pairs maximising the summed overlap: exhaustive for small counts, greedy beyond."""
    n_ref, n_sys = overlap.shape
    if min(n_ref, n_sys) == 0:
        return []
    if max(n_ref, n_sys) <= 8:
        best, best_pairs = -1.0, []
        if n_ref <= n_sys:
            for perm in itertools.permutations(range(n_sys), n_ref):
                score = overlap[range(n_ref), perm].sum()
                if score > best:
                    best, best_pairs = score, list(zip(range(n_ref), perm))
        else:
            for perm in itertools.permutations(range(n_ref), n_sys):
                score = overlap[perm, range(n_sys)].sum()
                if score > best:
                    best, best_pairs = score, list(zip(perm, range(n_sys)))
        return best_pairs
    pairs, used_r, used_s = [], set(), set()
    for flat in np.argsort(-overlap, axis=None):
        r, s = divmod(int(flat), n_sys)
        if r not in used_r and s not in used_s:
            pairs.append((r, s))
            used_r.add(r)
            used_s.add(s)
    return pairs


def der(reference: Turns, hypothesis: Turns, collar: float = 0.25) -> DERResult:
    ref, hyp = list(reference), list(hypothesis)
    end = max([e for _, e, _ in ref + hyp] + [0.0]) + collar + STEP
    frames = int(np.ceil(end / STEP))
    ref_speakers = sorted({s for *_, s in ref})
    hyp_speakers = sorted({s for *_, s in hyp})
    R = _grid(ref, ref_speakers, frames)
    H = _grid(hyp, hyp_speakers, frames)
    scored = np.ones(frames, dtype=bool)
    if collar > 0:
        c = int(round(collar / STEP))
        for start, stop, _ in ref:
            for t in (int(round(start / STEP)), int(round(stop / STEP))):
                scored[max(0, t - c):t + c] = False
    R, H = R[scored], H[scored]
    overlap = R.T.astype(np.int64) @ H.astype(np.int64)
    pairs = _best_mapping(overlap)
    n_ref, n_hyp = R.sum(axis=1), H.sum(axis=1)
    correct = np.zeros(len(R), dtype=np.int64)
    for r, s in pairs:
        correct += R[:, r] & H[:, s]
    missed = np.maximum(n_ref - n_hyp, 0).sum() * STEP
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum() * STEP
    confusion = (np.minimum(n_ref, n_hyp) - correct).sum() * STEP
    total = n_ref.sum() * STEP
    error = missed + false_alarm + confusion
    return DERResult(der=error / total if total else float(error > 0), missed=missed, false_alarm=false_alarm,
                     confusion=confusion, total=total,
                     mapping={hyp_speakers[s]: ref_speakers[r] for r, s in pairs})

"""Speaker windows -> speakers -> turns, and speakers -> names. numpy only (the gateway imports it).

``cluster``: average-linkage agglomerative clustering on cosine similarity, merging while the two
closest clusters are more alike than ``threshold`` (so the number of speakers is found, one included),
bounded by ``min_speakers``/``max_speakers``; clusters too small to be a speaker (a cough, a laugh, a
few stray windows) join the nearest one; then each window is moved to its nearest centroid (a few
rounds), which undoes chaining, and a window whose neighbours in the same region both disagree with it
takes their label. Labels are numbered by first appearance.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

THRESHOLD = 0.60  # average cosine similarity above which two clusters are one speaker (benchmarks/diarization.py)
MAX_GROUPS = 1000  # windows (13 min of speech, a window every 0.8 s) agglomerated one by one; past it, groups
MIN_SIZE = 3  # windows; smaller clusters are absorbed by the nearest speaker ...
MIN_SHARE = 0.03  # ... and so are clusters under this share of all windows (10 min: 19 s of speech)
NAME_THRESHOLD = 0.70  # a reference names a cluster only when their centroids are at least this alike


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: int


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _agglomerate(means: np.ndarray, sizes: np.ndarray, threshold: float, min_k: int, max_k: int) -> np.ndarray:
    """Average linkage on cosine similarity. ``means``: the mean unit vector of each starting group, so
    that ``means @ means.T`` is the average similarity between two groups' windows (exact, whatever the
    grouping); ``sizes``: the windows in each group. Returns the cluster (a starting group's index) of each group."""
    n = len(means)
    sim = means @ means.T
    np.fill_diagonal(sim, -np.inf)
    sizes = sizes.astype(np.float64).copy()
    members = np.arange(n)
    k = n
    while k > min_k:
        flat = int(np.argmax(sim))
        a, b = divmod(flat, n)
        if sim[a, b] < threshold and k <= max_k:
            break
        merged = (sizes[a] * sim[a] + sizes[b] * sim[b]) / (sizes[a] + sizes[b])  # Lance-Williams, average
        sim[a], sim[:, a] = merged, merged
        sim[a, a] = -np.inf
        sim[b], sim[:, b] = -np.inf, -np.inf
        sizes[a] += sizes[b]
        members[members == b] = a
        k -= 1
    return members


def _groups(emb: np.ndarray, count: int, rounds: int = 6) -> np.ndarray:
    """``count`` small groups of similar windows (spherical k-means from windows spread over time), so
    that a long recording's agglomeration starts from ``count`` groups instead of every window."""
    centres = emb[np.linspace(0, len(emb) - 1, count).astype(int)]
    for _ in range(rounds):
        assign = np.argmax(emb @ centres.T, axis=1)
        for g in range(count):
            member = emb[assign == g]
            if len(member):
                centres[g] = _unit(member.mean(axis=0))
    return np.unique(np.argmax(emb @ centres.T, axis=1), return_inverse=True)[1]


def _relabel(labels: np.ndarray) -> np.ndarray:
    order: dict[int, int] = {}
    for value in labels:
        order.setdefault(int(value), len(order))
    return np.array([order[int(v)] for v in labels], dtype=np.int64)


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    emb = _unit(embeddings)
    return np.stack([_unit(emb[labels == k].mean(axis=0)) for k in range(int(labels.max()) + 1)])


def cluster(embeddings: np.ndarray, *, threshold: float = THRESHOLD, min_speakers: int = 1,
            max_speakers: int = 8, regions: np.ndarray | None = None, rounds: int = 3,
            min_size: int | None = None) -> np.ndarray:
    """One speaker index per window (0, 1, ... by first appearance). ``regions``: the speech region of
    each window (same value = same region, in time order), for the neighbour smoothing. ``min_size``:
    the fewest windows a speaker may have (default: ``MIN_SIZE``, or ``MIN_SHARE`` of all windows)."""
    emb = _unit(embeddings)
    n = len(emb)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if min_size is None:
        min_size = max(MIN_SIZE, int(np.ceil(MIN_SHARE * n)))
    min_k = max(1, min(min_speakers, n))
    max_k = max(min_k, min(max_speakers, n))
    if n > MAX_GROUPS:  # a long recording: agglomerate groups of similar windows, not single windows
        group = _groups(emb, MAX_GROUPS)
    else:
        group = np.arange(n)
    counts = np.bincount(group)
    means = np.stack([emb[group == g].mean(axis=0) for g in range(len(counts))])
    low = min(min_k, len(counts))
    labels = _relabel(_agglomerate(means, counts, threshold, low, max(low, min(max_k, len(counts))))[group])
    labels = _absorb_small(emb, labels, min_size, min_k)
    for _ in range(rounds):
        moved = _relabel(np.argmax(emb @ centroids(emb, labels).T, axis=1))
        if int(moved.max()) + 1 < min_k or np.array_equal(moved, labels):
            break
        labels = moved
    if regions is not None and n >= 3:
        labels = _smooth(labels, np.asarray(regions))
    return _relabel(labels)


def _absorb_small(emb: np.ndarray, labels: np.ndarray, min_size: int, min_k: int) -> np.ndarray:
    """Clusters of fewer than ``min_size`` windows (a cough, a laugh, a stray window) join the nearest
    larger cluster, as long as ``min_k`` clusters remain."""
    counts = np.bincount(labels)
    while len(counts) > min_k and counts.min() < min_size and counts.max() >= min_size:
        small = int(np.argmin(counts))
        cents = centroids(emb, labels)
        sim = cents[small] @ cents.T
        sim[counts < min_size] = -np.inf
        labels = np.where(labels == small, int(np.argmax(sim)), labels)
        labels = _relabel(labels)
        counts = np.bincount(labels)
    return labels


def _smooth(labels: np.ndarray, regions: np.ndarray) -> np.ndarray:
    out = labels.copy()
    for i in range(1, len(labels) - 1):
        same_region = regions[i - 1] == regions[i] == regions[i + 1]
        if same_region and labels[i - 1] == labels[i + 1] != labels[i]:
            out[i] = labels[i - 1]
    return out


def turns(spans: np.ndarray, labels: np.ndarray, join_gap: float = 0.05) -> list[Turn]:
    """Consecutive spans of one speaker joined into turns (a gap longer than ``join_gap`` keeps them apart)."""
    out: list[Turn] = []
    for (start, end), label in sorted(zip(np.asarray(spans).tolist(), np.asarray(labels).tolist())):
        if out and out[-1].speaker == label and start - out[-1].end <= join_gap:
            out[-1] = Turn(out[-1].start, max(out[-1].end, end), label)
        else:
            out.append(Turn(float(start), float(end), int(label)))
    return out


def letter(index: int) -> str:
    """OpenAI's labels for unnamed speakers: A, B, ..., Z, AA, AB, ..."""
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = letters[rem] + name
    return name


def names(speaker_centroids: np.ndarray, references: dict[str, np.ndarray],
          threshold: float = NAME_THRESHOLD) -> list[str]:
    """A label per cluster: the closest reference's name (each name used once, best pairs first, only
    above ``threshold``), else the next free letter."""
    k = len(speaker_centroids)
    labels: list[str | None] = [None] * k
    if references and k:
        ref_names = list(references)
        sim = _unit(speaker_centroids) @ _unit(np.stack([references[r] for r in ref_names])).T
        used: set[int] = set()
        for flat in np.argsort(-sim, axis=None):
            c, r = divmod(int(flat), len(ref_names))
            if sim[c, r] < threshold:
                break
            if labels[c] is None and r not in used:
                labels[c] = ref_names[r]
                used.add(r)
    taken = {label for label in labels if label}
    letters = (letter(i) for i in range(10 * k + 26))
    return [label or next(x for x in letters if x not in taken) for label in labels]

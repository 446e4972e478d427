"""What the engine counts, as Prometheus metrics on Triton's own endpoint (:8002/metrics).

Plain Python: the model turns these into ``pb_utils.MetricFamily`` objects; this module only says which
metrics there are and how much each moved since the last look.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTERS: dict[str, tuple[str, str]] = {
    # metric name: (EngineStats field, help text)
    "whisper_audio_seconds_total": ("audio_seconds", "Seconds of audio transcribed or translated"),
    "whisper_windows_total": ("windows", "Windows (up to 30 s of speech) decoded, re-decoded skipped speech included"),
    "whisper_fallback_windows_total": (
        "fallbacks", "Windows that failed the compression-ratio / log-prob / language guards and were decoded again"),
    "whisper_full_context_rechecks_total": (
        "rechecks", "Windows first decoded at a shorter encoder context whose result was not confident enough to keep, "
                    "decoded again at the full 30 s context"),
    "whisper_generate_batches_total": ("batches", "Batched encode + generate calls"),
}
BATCH_WINDOWS = "whisper_batch_windows"
BATCH_WINDOWS_HELP = "Windows per batched encode + generate call"
BATCH_BUCKETS = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


@dataclass
class Movement:
    counters: dict[str, float]  # metric name -> increase since the last look (only those that moved)
    batch_sizes: list[int]  # windows per batch of the last transcribe call


class StatsWatcher:
    """Turns the engine's running totals into increments. Totals that went down (the stats were reset)
    count from zero again, so a counter never moves backwards."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def movement(self, stats) -> Movement:
        counters = {}
        for name, (field, _) in COUNTERS.items():
            value = float(getattr(stats, field))
            before = self._seen.get(name, 0.0)
            delta = value - before if value >= before else value
            self._seen[name] = value
            if delta > 0:
                counters[name] = delta
        return Movement(counters, list(stats.last_batch_sizes))

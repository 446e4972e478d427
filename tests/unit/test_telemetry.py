"""The engine's running totals become Prometheus counter increments that never go backwards."""

from __future__ import annotations

from whisper_triton.engine import EngineStats
from whisper_triton.telemetry import COUNTERS, StatsWatcher


def test_increments_since_the_last_look_and_only_those_that_moved():
    stats, watcher = EngineStats(), StatsWatcher()
    assert watcher.movement(stats).counters == {}
    stats.windows, stats.batches, stats.audio_seconds, stats.last_batch_sizes = 5, 2, 41.5, [4, 1]
    move = watcher.movement(stats)
    assert move.counters == {"whisper_windows_total": 5, "whisper_generate_batches_total": 2,
                             "whisper_audio_seconds_total": 41.5}
    assert move.batch_sizes == [4, 1]
    stats.windows, stats.fallbacks = 7, 1
    assert watcher.movement(stats).counters == {"whisper_windows_total": 2, "whisper_fallback_windows_total": 1}


def test_a_reset_counts_from_zero_rather_than_backwards():
    stats, watcher = EngineStats(windows=10), StatsWatcher()
    watcher.movement(stats)
    stats.windows = 3  # e.g. a benchmark reset the engine's stats
    assert watcher.movement(stats).counters == {"whisper_windows_total": 3}


def test_every_counter_names_a_stats_field():
    fields = set(EngineStats.__dataclass_fields__)
    assert all(field in fields for field, _ in COUNTERS.values())
    assert all(name.endswith("_total") and name.startswith("whisper_") for name in COUNTERS)

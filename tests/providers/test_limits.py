"""providers.limits: bounded inflating and SSE line splitting, piece by piece."""

from __future__ import annotations

import gzip
import zlib

import pytest

from bifrost_stt.kernel.errors import UpstreamUnavailable
from bifrost_stt.providers.limits import STEP, _Inflater, _line_end


def inflate(encoding: str, payload: bytes, cut: int) -> tuple[bytes, int]:
    """Decode ``payload`` fed in ``cut``-byte pieces; (result, largest piece seen)."""
    inflater = _Inflater("openai", encoding)
    out, largest = [], 0
    for i in range(0, len(payload), cut):
        for piece in inflater.feed(payload[i:i + cut]):
            largest = max(largest, len(piece))
            out.append(piece)
    return b"".join(out), largest


DATA = b"".join(b"word %d " % i for i in range(200_000)) + b"a" * (3 * STEP + 17)


@pytest.mark.parametrize("cut", [7, 4096, 1 << 20])
@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),  # zlib-wrapped, as the RFC says
    ("deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some servers send
    ("identity", lambda d: d),
])
def test_every_encoding_decodes_whole_in_bounded_pieces(encoding: str, compress: object, cut: int) -> None:
    payload = compress(DATA)  # type: ignore[operator]
    result, largest = inflate(encoding, payload, cut)
    assert result == DATA
    if encoding != "identity":
        assert largest <= STEP


def test_a_bomb_is_produced_a_step_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    pieces = _Inflater("openai", "gzip").feed(bomb[:16384])
    first = next(pieces)
    assert len(first) <= STEP  # nothing inflates past one step before the caller has counted it


def test_an_unknown_or_broken_encoding_is_a_502() -> None:
    with pytest.raises(UpstreamUnavailable, match="Content-Encoding"):
        _Inflater("openai", "br")
    with pytest.raises(UpstreamUnavailable, match="does not decompress"):
        list(_Inflater("openai", "gzip").feed(b"not gzip at all"))


@pytest.mark.parametrize("buffer,expected", [
    (b"abc\ndef", (3, 4)),
    (b"abc\r\ndef", (3, 5)),
    (b"abc\rdef", (3, 4)),
    (b"abc\r", None),  # may be half of \r\n: wait
    (b"abc", None),
])
def test_line_ends(buffer: bytes, expected: tuple[int, int] | None) -> None:
    assert _line_end(bytearray(buffer), 0) == expected

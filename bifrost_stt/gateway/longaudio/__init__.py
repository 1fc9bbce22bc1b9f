"""Long audio: audio a target cannot take whole is split at quiet points, sent in parallel, stitched (split.py)."""

from bifrost_stt.gateway.longaudio.split import LongAudio, Split, Target

__all__ = ["LongAudio", "Split", "Target"]

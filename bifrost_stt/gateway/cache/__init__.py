"""The exact transcription cache: the same audio, asked the same way, never pays a provider twice."""

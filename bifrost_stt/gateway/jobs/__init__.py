"""Async transcription jobs: the record, the store shared by worker processes, the runner."""

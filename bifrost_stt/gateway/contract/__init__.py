"""The contract: loading the OpenAPI document, syncing it from upstream, reading multipart forms, validation."""

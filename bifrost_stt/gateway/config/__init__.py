"""Configuration: the upstream config.json shape, checked field by field, turned into typed settings."""

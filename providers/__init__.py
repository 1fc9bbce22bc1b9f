"""One module per provider behind one registry (providers.registry); canonical in, canonical out."""

"""Data: read/ (streamed readers, encodings, format detection), study/ (quality profile and report),
prepare/ (recipe, cleaning, tokenizing with the loss mask, splits, shards, fingerprints)."""

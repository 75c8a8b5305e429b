"""`forge prepare`: recipe, cleaning, tokenizing with the loss mask, splits, shards, manifest."""

"""The usage store: one SQLite row per client request, with tokens, cost and timings."""

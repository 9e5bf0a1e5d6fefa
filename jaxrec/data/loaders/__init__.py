"""Real-format loaders; each takes a local directory (nothing is downloaded)."""

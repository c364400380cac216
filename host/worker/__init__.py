"""The worker role: claims runs, runs handlers, records results."""

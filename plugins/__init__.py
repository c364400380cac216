"""Bundled handler plugins. Each module registers exactly as a third-party plugin would."""

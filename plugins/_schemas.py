"""Where the bundled plugins' schemas live: the top-level schemas/ folder, shipped as package
data, so the path works from a source checkout and from an installed wheel alike."""

from __future__ import annotations

from pathlib import Path

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


def schema_path(name: str) -> Path:
    return SCHEMAS_DIR / f"{name}.json"

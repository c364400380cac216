"""What the CLI prints: the same data as JSON (--json, for scripts) or as text (for people)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print `data` as indented JSON when the command was given --json, else `text`."""
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(text + "\n")

"""Payload mappings: a small JSON template turning a webhook's event into a job payload.

The template is any JSON value. A string that is exactly `{{/json/pointer}}` becomes the event's
value at that pointer (any JSON type); a string with such placeholders among other text has each
replaced by the value as text; everything else is copied. A pointer the event does not have is
an error naming the template field, so the caller gets a 422 and nothing runs.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from host.errors import FieldError

_PLACEHOLDER = re.compile(r"\{\{\s*(/[^}]*|)\s*\}\}")


class MappingError(Exception):
    """The event lacks what the mapping points at; `errors` name each template field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))
        self.errors = errors


def apply(template: Any, event: Any) -> Any:
    """The payload `template` makes of `event`; MappingError when a pointer is missing."""
    errors: list[FieldError] = []
    result = _walk(template, event, "/mapping", errors)
    if errors:
        raise MappingError(errors)
    return result


def check_template(template: Any) -> list[FieldError]:
    """Placeholders in `template` that are not JSON pointers (for the trigger's 422)."""
    errors: list[FieldError] = []
    _walk(template, None, "/mapping", errors, dry=True)
    return errors


def resolve(event: Any, pointer: str) -> Any:
    """The value at an RFC 6901 JSON pointer; KeyError when absent."""
    node = event
    if pointer == "":
        return node
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise KeyError(pointer)
    return node


def _walk(node: Any, event: Any, at: str, errors: list[FieldError], dry: bool = False) -> Any:
    if isinstance(node, dict):
        return {k: _walk(v, event, f"{at}/{_escape(k)}", errors, dry) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, event, f"{at}/{i}", errors, dry) for i, v in enumerate(node)]
    if isinstance(node, str) and "{{" in node:
        return _fill(node, event, at, errors, dry)
    return node


def _fill(text: str, event: Any, at: str, errors: list[FieldError], dry: bool) -> Any:
    whole = _PLACEHOLDER.fullmatch(text.strip())
    if dry:
        if "{{" in _PLACEHOLDER.sub("", text):
            errors.append(FieldError(at, "a placeholder is {{/json/pointer}}"))
        return text
    try:
        if whole:
            return resolve(event, whole.group(1).rstrip())
        return _PLACEHOLDER.sub(lambda m: _text(resolve(event, m.group(1).rstrip())), text)
    except KeyError as exc:
        errors.append(FieldError(at, f"the event has nothing at {exc.args[0] or '/'}"))
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")

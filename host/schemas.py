"""JSON Schemas: loading a job type's schema, checking it, and validating payloads against it.

A schema without `$schema` is read as JSON Schema 2020-12. Validators are built once per type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError as JsonSchemaError
from jsonschema.protocols import Validator

from host.errors import FieldError, SchemaError

_DEFAULT_DRAFT = jsonschema.Draft202012Validator
#: Keywords that never reject a payload: identifiers and annotations.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "default", "examples", "deprecated"}
)


def _is_object(payload: Any) -> bool:
    return isinstance(payload, dict)


def _anything(payload: Any) -> bool:
    return True


def quick_accept(schema: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    """A check that accepts payloads without jsonschema, for a schema whose only constraint is
    `"type": "object"` (or none): jsonschema costs about 3 µs per payload even then, a third of
    a producer's Python time per run. It only ever accepts, as the schema would; a payload it
    does not accept goes to the full validator, which names the errors. None: no shortcut."""
    constraints = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    if not constraints:
        return _anything
    if constraints == {"type": "object"}:
        return _is_object
    return None


def load_schema(
    schema: Mapping[str, Any] | str | Path, *, base_dir: Path, plugin: str
) -> tuple[dict[str, Any], str]:
    """The schema as a dict and where it came from; relative paths are under `base_dir`."""
    if isinstance(schema, Mapping):
        return dict(schema), "(inline)"
    path = Path(schema)
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        msg = f"cannot read schema: {exc.strerror}"
        raise SchemaError(msg, plugin=plugin, file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"schema is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            plugin=plugin,
            file=str(path),
        ) from exc
    if not isinstance(data, dict):
        raise SchemaError("schema must be a JSON object", plugin=plugin, file=str(path))
    return data, str(path)


def compile_validator(schema: Mapping[str, Any], *, plugin: str, file: str) -> Validator:
    """A validator for `schema`, after checking the schema against its metaschema."""
    cls = jsonschema.validators.validator_for(schema, default=_DEFAULT_DRAFT)
    try:
        cls.check_schema(dict(schema))
    except JsonSchemaError as exc:
        where = pointer(exc.absolute_path)
        raise SchemaError(
            f"schema is invalid at {where}: {exc.message}", plugin=plugin, file=file
        ) from exc
    validator: Validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)
    return validator


def payload_errors(validator: Validator, payload: Any) -> list[FieldError]:
    """Every way `payload` fails the schema, as JSON pointers, sorted by path."""
    errors = [
        FieldError(pointer(e.absolute_path), e.message) for e in validator.iter_errors(payload)
    ]
    return sorted(errors, key=lambda e: (e.path, e.message))


def pointer(parts: Any) -> str:
    """A JSON pointer (RFC 6901) from a path of keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)

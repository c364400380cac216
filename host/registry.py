"""Plugin discovery and the registry of job types.

Plugins come from the modules named in plugins.toml and from installed packages declaring the
`jobhost.plugins` entry point. The plugin manager is built by a function, never at import, so
tests can build as many registries as they like.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy
from jsonschema.protocols import Validator

from host import hookspecs
from host.config import PluginsConfig
from host.errors import (
    ConfigError,
    JobhostError,
    PluginError,
    SchemaError,
    UnknownJobType,
    ValidationFailed,
)
from host.jobtypes import JobType, ResolvedType
from host.policy import Policy, merge_policy
from host.schemas import compile_validator, load_schema, payload_errors, quick_accept

ENTRY_POINT_GROUP = "jobhost.plugins"


@dataclass(frozen=True)
class LoadedPlugin:
    name: str  #: module name or entry-point name
    obj: object  #: the module or object registered with pluggy
    file: str  #: where it lives, for messages


def build_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("jobhost")
    pm.add_hookspecs(hookspecs)
    return pm


def discover_plugins(config: PluginsConfig) -> list[LoadedPlugin]:
    """Import the plugins.toml modules, then the entry points (unless disabled)."""
    found = [_import_module(name, config.source) for name in config.modules]
    if config.entry_points:
        names = {p.name for p in found}
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in config.disabled or ep.name in names or ep.value in names:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"entry point {ep.value!r} failed to load: {type(exc).__name__}: {exc}",
                    plugin=ep.name,
                    file=_dist_name(ep),
                ) from exc
            found.append(LoadedPlugin(ep.name, obj, _file_of(obj)))
    return found


def _import_module(name: str, source: str) -> LoadedPlugin:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise PluginError(
            f"cannot import module {name!r} (listed in {source}): {type(exc).__name__}: {exc}",
            plugin=name,
            file=source,
        ) from exc
    return LoadedPlugin(name, module, _file_of(module))


def _file_of(obj: object) -> str:
    try:
        return inspect.getsourcefile(obj if isinstance(obj, ModuleType) else type(obj)) or "?"
    except TypeError:
        return "?"


def _dist_name(ep: Any) -> str:
    dist = getattr(ep, "dist", None)
    return f"package {dist.name}" if dist is not None else "entry point"


class Registry:
    """The job types this host runs: resolved, validated and ready to look up by name."""

    def __init__(self, pm: pluggy.PluginManager, types: Mapping[str, ResolvedType]) -> None:
        self.pm = pm
        self.types = dict(types)
        self._validators: dict[str, Validator] = {
            name: compile_validator(t.schema, plugin=t.plugin, file=t.source)
            for name, t in types.items()
        }
        self._quick = {name: quick_accept(t.schema) for name, t in types.items()}
        #: Whether any plugin observes run lifecycle events (skips the hook calls otherwise).
        self.observes_runs = bool(
            pm.hook.jobhost_run_finished.get_hookimpls() or pm.hook.jobhost_run_dead.get_hookimpls()
        )

    def get(self, name: str) -> ResolvedType:
        try:
            return self.types[name]
        except KeyError:
            raise UnknownJobType(name) from None

    def validate(self, name: str, payload: Any) -> None:
        """Raise ValidationFailed, naming each failing path, if `payload` does not fit the type."""
        quick = self._quick.get(name)
        if quick is not None and quick(payload):
            return
        validator = self._validators.get(name)
        if validator is None:
            raise UnknownJobType(name)
        errors = payload_errors(validator, payload)
        if errors:
            raise ValidationFailed(f"payload for job type {name!r}", errors)


def load_registry(config: PluginsConfig, *, extra: Iterable[object] = ()) -> Registry:
    """Discover plugins, collect their job types and check every one; `extra` plugin objects
    (modules or instances) are registered too, as tests and embedding applications do."""
    pm = build_plugin_manager()
    plugins = discover_plugins(config)
    plugins += [LoadedPlugin(_plugin_name(o), o, _file_of(o)) for o in extra]
    for plugin in plugins:
        try:
            pm.register(plugin.obj, name=plugin.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(str(exc), plugin=plugin.name, file=plugin.file) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"implements an unknown hook: {exc}",
            plugin=pm.get_name(exc.plugin) or str(exc.plugin),
            file=_file_of(exc.plugin),
        ) from exc
    types: dict[str, ResolvedType] = {}
    for impl in pm.hook.jobhost_job_types.get_hookimpls():
        file = _file_of(impl.plugin)
        for jt in _call_job_types(impl, file):
            resolved = _resolve(jt, impl.plugin_name, file, config)
            if resolved.name in types:
                other = types[resolved.name]
                raise PluginError(
                    f"job type {resolved.name!r} is already provided by plugin {other.plugin} "
                    f"({other.source})",
                    plugin=impl.plugin_name,
                    file=file,
                )
            types[resolved.name] = resolved
    unknown = set(config.types) - set(types)
    if unknown:
        raise ConfigError(
            f"{config.source}: [types] names job type(s) no plugin provides: "
            + ", ".join(sorted(unknown))
        )
    registry = Registry(pm, types)
    return registry


def _plugin_name(obj: object) -> str:
    return obj.__name__ if isinstance(obj, ModuleType) else f"{type(obj).__name__}@{id(obj):x}"


def _call_job_types(impl: Any, file: str) -> list[JobType]:
    try:
        result = impl.function()
    except Exception as exc:
        raise PluginError(
            f"jobhost_job_types() raised {type(exc).__name__}: {exc}",
            plugin=impl.plugin_name,
            file=file,
        ) from exc
    if not isinstance(result, list | tuple) or not all(isinstance(t, JobType) for t in result):
        raise PluginError(
            "jobhost_job_types() must return a list of host.JobType",
            plugin=impl.plugin_name,
            file=file,
        )
    return list(result)


def _resolve(jt: JobType, plugin: str, file: str, config: PluginsConfig) -> ResolvedType:
    where = f"plugin {plugin} ({file}), job type {jt.name!r}"
    if not isinstance(jt.name, str) or not _valid_type_name(jt.name):
        raise PluginError(
            f"job type name {jt.name!r} must be 1-100 characters of letters, digits, . _ -",
            plugin=plugin,
            file=file,
        )
    if not callable(jt.handler):
        raise PluginError(
            f"job type {jt.name!r} has no callable handler (got {type(jt.handler).__name__})",
            plugin=plugin,
            file=file,
        )
    if not isinstance(jt.schema, Mapping | str | Path):
        raise SchemaError(
            f"job type {jt.name!r} has a schema of type {type(jt.schema).__name__}; "
            "expected a dict or the path of a JSON file",
            plugin=plugin,
            file=file,
        )
    schema, schema_file = load_schema(jt.schema, base_dir=Path(file).parent, plugin=plugin)
    try:
        policy = merge_policy(Policy(), jt.policy_overrides, where=where)
        if jt.name in config.types:
            policy = merge_policy(
                policy, config.types[jt.name], where=f"{config.source} [types.{jt.name!r}]"
            )
    except ConfigError as exc:
        raise PluginError(exc.message, plugin=plugin, file=file) from exc
    handler = jt.handler
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object with an async __call__
    )
    # The schema is checked against its metaschema when the Registry compiles its validator.
    return ResolvedType(
        name=jt.name,
        handler=handler,
        schema=schema,
        policy=policy,
        plugin=plugin,
        source=schema_file if schema_file != "(inline)" else file,
        description=jt.description,
        is_async=is_async,
    )


def _valid_type_name(name: str) -> bool:
    return 0 < len(name) <= 100 and all(c.isalnum() or c in "._-" for c in name)


__all__ = ["JobhostError", "Registry", "build_plugin_manager", "load_registry"]

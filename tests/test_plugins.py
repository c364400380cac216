"""Plugin discovery, and broken plugins stopping start-up with a message that names the plugin,
the file and the problem. Against the real registry: real modules on sys.path, real
dist-info metadata, and a real `pip install` of examples/jobhost-example-plugin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import Distribution
from pathlib import Path
from typing import Any

import pytest

from host.config import PluginsConfig, load_plugins_config
from host.errors import (
    ConfigError,
    FieldError,
    PluginError,
    SchemaError,
    UnknownJobType,
    ValidationFailed,
)
from host.policy import Backoff
from host.registry import Registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "jobhost-example-plugin"

MakeModule = Callable[..., str]


# ---------------------------------------------------------------------------------------------
# Helpers: plugin modules written on the fly into a folder on sys.path
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def make_module(plugin_dir: Path) -> Iterator[MakeModule]:
    """Write a module into plugin_dir and return its (unique) name; forgotten afterwards."""
    created: list[str] = []

    def make(source: str, *, name: str | None = None) -> str:
        name = name or f"jh_plugin_{uuid.uuid4().hex[:10]}"
        (plugin_dir / f"{name}.py").write_text(textwrap.dedent(source))
        created.append(name)
        return name

    yield make
    for name in created:
        sys.modules.pop(name, None)


def modules_only(*names: str) -> PluginsConfig:
    """The named modules and nothing installed."""
    return PluginsConfig(modules=names, entry_points=False)


def job_types_module(body: str, *, imports: str = "") -> str:
    """Source of a plugin module whose jobhost_job_types() returns `body`."""
    return (
        "from host import JobType, hookimpl\n"
        f"{imports}\n"
        "async def handle(payload, ctx):\n"
        "    return payload\n\n"
        "@hookimpl\n"
        "def jobhost_job_types():\n"
        f"    return {body}\n"
    )


def write_dist(
    folder: Path, dist: str, entry_points: dict[str, str], *, requires: tuple[str, ...] = ()
) -> None:
    """A minimal installed distribution (what pip writes) declaring jobhost.plugins entries."""
    info = folder / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {dist}", "Version: 1.0"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    eps = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[jobhost.plugins]\n{eps}")


def expect_plugin_error(
    exc_type: type[Exception], config: PluginsConfig, *fragments: str
) -> PluginError | ConfigError:
    with pytest.raises(exc_type) as info:
        load_registry(config)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, PluginError | ConfigError)
    return info.value


# ---------------------------------------------------------------------------------------------
# Discovery: plugins.toml modules
# ---------------------------------------------------------------------------------------------


def test_modules_listed_in_plugins_toml_are_loaded(
    make_module: MakeModule, plugin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schemas = plugin_dir / "schemas"
    schemas.mkdir()
    (schemas / "one.json").write_text('{"type": "object", "required": ["n"]}')
    first = make_module(
        job_types_module('[JobType("t.one", handle, "schemas/one.json", priority=7)]')
    )
    second = make_module(
        """
        from host import JobType, hookimpl

        def plain(payload, ctx):
            return 1

        @hookimpl
        def jobhost_job_types():
            return [JobType("t.two", plain, {"type": "object"}, description="sync")]
        """
    )
    make_module(job_types_module('[JobType("t.unlisted", handle, {})]'))
    toml = tmp_path / "plugins.toml"
    toml.write_text(f'[plugins]\nmodules = ["{first}", "{second}"]\nentry_points = false\n')
    # Relative schema paths are under the plugin's folder, not the working directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    registry = load_registry(load_plugins_config(toml))

    assert set(registry.types) == {"t.one", "t.two"}
    one, two = registry.get("t.one"), registry.get("t.two")
    assert (one.plugin, two.plugin) == (first, second)
    assert one.source == str(schemas / "one.json")
    assert one.schema == {"type": "object", "required": ["n"]}
    assert one.policy.priority == 7 and two.policy.priority == 0
    assert (one.is_async, two.is_async) == (True, False)
    assert two.description == "sync"
    assert (two.handler.__module__, two.handler.__name__) == (second, "plain")
    with pytest.raises(ValidationFailed):
        registry.validate("t.one", {})
    registry.validate("t.one", {"n": 1})


def test_missing_plugins_toml_means_entry_points_only(tmp_path: Path) -> None:
    config = load_plugins_config(tmp_path / "absent.toml")
    assert config.modules == () and config.entry_points is True and not config.types


# ---------------------------------------------------------------------------------------------
# Discovery: entry points (installed metadata found by importlib.metadata)
# ---------------------------------------------------------------------------------------------


def test_entry_point_plugins_are_loaded_and_can_be_disabled(
    make_module: MakeModule, plugin_dir: Path
) -> None:
    module = make_module(job_types_module('[JobType("ep.thing", handle, {}, max_attempts=9)]'))
    ep_name = f"ep_{uuid.uuid4().hex[:8]}"
    write_dist(plugin_dir, f"jh-dist-{ep_name}", {ep_name: module})

    registry = load_registry(PluginsConfig())
    assert registry.get("ep.thing").plugin == ep_name
    assert registry.get("ep.thing").policy.max_attempts == 9

    assert "ep.thing" not in load_registry(PluginsConfig(disabled=frozenset({ep_name}))).types
    assert "ep.thing" not in load_registry(PluginsConfig(entry_points=False)).types


def test_module_both_listed_and_an_entry_point_is_loaded_once(
    make_module: MakeModule, plugin_dir: Path
) -> None:
    module = make_module(job_types_module('[JobType("ep.once", handle, {})]'))
    write_dist(plugin_dir, f"jh-dist-{module}", {"once": module})

    registry = load_registry(PluginsConfig(modules=(module,)))

    assert registry.get("ep.once").plugin == module


def test_entry_point_that_fails_to_import_stops_startup(
    make_module: MakeModule, plugin_dir: Path
) -> None:
    module = make_module("raise RuntimeError('plugin needs FOO_TOKEN')\n")
    ep_name = f"broken_{uuid.uuid4().hex[:8]}"
    dist = f"jh-broken-{ep_name}"
    write_dist(plugin_dir, dist, {ep_name: module})

    err = expect_plugin_error(
        PluginError,
        PluginsConfig(),
        f"plugin {ep_name}",
        f"package {dist}",
        f"entry point '{module}' failed to load",
        "RuntimeError: plugin needs FOO_TOKEN",
    )
    assert isinstance(err, PluginError) and err.plugin == ep_name
    # Disabling the broken entry point lets the host start.
    load_registry(PluginsConfig(disabled=frozenset({ep_name})))


# ---------------------------------------------------------------------------------------------
# The drop-in example package, really pip-installed
# ---------------------------------------------------------------------------------------------

REPORT = r"""
import asyncio, json, sys
from pathlib import Path
from host.config import load_plugins_config
from host.errors import ValidationFailed
from host.policy import policy_as_dict
from host.registry import load_registry

registry = load_registry(load_plugins_config(Path(sys.argv[1])))
out = {"types": {}, "validation": [], "results": []}
for name, t in registry.types.items():
    out["types"][name] = {"plugin": t.plugin, "source": t.source, "is_async": t.is_async,
                          "policy": policy_as_dict(t.policy)}
if "example.greet" in registry.types:
    for payload in json.loads(sys.argv[2]):
        try:
            registry.validate("example.greet", payload)
            out["validation"].append([])
        except ValidationFailed as exc:
            out["validation"].append([[e.path, e.message] for e in exc.errors])
    handler = registry.get("example.greet").handler
    for payload in ({"name": "Ada"}, {"name": "Ada", "shout": True}):
        out["results"].append(asyncio.run(handler(payload, None)))
print(json.dumps(out))
"""

PAYLOADS = [
    {"name": "Ada"},
    {"name": "Ada", "shout": False},
    {},
    {"name": 5, "shout": "yes"},
    {"name": "Ada", "colour": "red"},
]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/jobhost-example-plugin pip-installed into a folder of its own."""
    base = tmp_path_factory.mktemp("example")
    # Build from a copy, so the build leaves no build/ or egg-info/ in the repository.
    source = base / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = base / "site"
    # No --no-build-isolation: the venv's setuptools has no bdist_wheel (no `wheel`), so pip
    # fetches the build backend the example declares.
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run(
        [*pip, "--no-deps", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def report(site: Path, tmp_path: Path, plugins_toml: str | None = None) -> dict[str, Any]:
    toml = tmp_path / "plugins.toml"
    if plugins_toml is not None:
        toml.write_text(plugins_toml)
    env = {"PYTHONPATH": f"{site}:{ROOT}", "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", REPORT, str(toml), json.dumps(PAYLOADS)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.mark.slow
def test_example_package_is_discovered_after_pip_install(
    example_site: Path, tmp_path: Path
) -> None:
    installed = list((example_site / "jobhost_example").iterdir())
    assert example_site / "jobhost_example" / "greet.schema.json" in installed
    # Installable next to the host: it does not pull in (another) jobhost.
    (dist_info,) = example_site.glob("jobhost_example_plugin-*.dist-info")
    assert not Distribution.at(dist_info).requires

    # No plugins.toml at all: the entry point alone brings the type in.
    out = report(example_site, tmp_path)

    greet = out["types"]["example.greet"]
    assert greet["plugin"] == "example"
    assert greet["source"] == str(example_site / "jobhost_example" / "greet.schema.json")
    assert greet["is_async"] is True
    assert greet["policy"]["max_attempts"] == 2
    assert greet["policy"]["priority"] == 3
    assert greet["policy"]["timeout_s"] == 300.0  # untouched fields keep the host default
    valid, valid_shout, missing, wrong_types, extra = out["validation"]
    assert valid == [] and valid_shout == []
    assert missing == [["", "'name' is a required property"]]
    assert [path for path, _ in wrong_types] == ["/name", "/shout"]
    assert "is not of type 'string'" in wrong_types[0][1]
    assert "is not of type 'boolean'" in wrong_types[1][1]
    assert len(extra) == 1 and "'colour' was unexpected" in extra[0][1]
    assert out["results"] == [{"greeting": "Hello, Ada!"}, {"greeting": "HELLO, ADA!"}]


@pytest.mark.slow
def test_example_package_disabled_in_plugins_toml(example_site: Path, tmp_path: Path) -> None:
    out = report(example_site, tmp_path, '[plugins]\ndisable = ["example"]\n')
    assert "example.greet" not in out["types"]


@pytest.mark.slow
def test_plugins_toml_overrides_example_policy(example_site: Path, tmp_path: Path) -> None:
    out = report(
        example_site,
        tmp_path,
        '[types."example.greet"]\nmax_attempts = 6\nrate = "10/s"\nbackoff = { base_s = 0.5 }\n',
    )
    policy = out["types"]["example.greet"]["policy"]
    assert policy["max_attempts"] == 6  # plugins.toml wins over the plugin's 2
    assert policy["priority"] == 3  # the plugin's default where plugins.toml is silent
    assert policy["rate"] == "10/s"
    assert policy["backoff"]["base_s"] == 0.5
    assert policy["backoff"]["factor"] == 2.0


# ---------------------------------------------------------------------------------------------
# Broken plugins stop start-up, naming the plugin, the file and the problem
# ---------------------------------------------------------------------------------------------


def test_module_that_fails_to_import(make_module: MakeModule, tmp_path: Path) -> None:
    module = make_module("import jh_no_such_dependency\n")
    toml = tmp_path / "plugins.toml"
    toml.write_text(f'[plugins]\nmodules = ["{module}"]\nentry_points = false\n')

    expect_plugin_error(
        PluginError,
        load_plugins_config(toml),
        f"plugin {module}",
        f"cannot import module '{module}' (listed in {toml})",
        "ModuleNotFoundError: No module named 'jh_no_such_dependency'",
    )


def test_module_listed_but_absent(tmp_path: Path) -> None:
    toml = tmp_path / "plugins.toml"
    toml.write_text('[plugins]\nmodules = ["jh_plugin_typo"]\nentry_points = false\n')
    expect_plugin_error(
        PluginError, load_plugins_config(toml), "plugin jh_plugin_typo", str(toml), "No module"
    )


def test_duplicate_job_type_names_both_plugins(make_module: MakeModule, plugin_dir: Path) -> None:
    first = make_module(job_types_module('[JobType("dup.type", handle, {})]'))
    second = make_module(job_types_module('[JobType("dup.type", handle, {})]'))

    err = expect_plugin_error(
        PluginError,
        modules_only(first, second),
        "job type 'dup.type' is already provided",
        first,
        second,
        str(plugin_dir / f"{first}.py"),
        str(plugin_dir / f"{second}.py"),
    )
    assert isinstance(err, PluginError) and err.plugin in (first, second)


def test_handler_not_callable(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(job_types_module('[JobType("bad.handler", "handle", {})]'))
    err = expect_plugin_error(
        PluginError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "job type 'bad.handler' has no callable handler (got str)",
    )
    assert isinstance(err, PluginError)
    assert (err.plugin, err.file) == (module, str(plugin_dir / f"{module}.py"))


@pytest.mark.parametrize("name", ["", "has space", "slash/type", "x" * 101])
def test_invalid_job_type_name(make_module: MakeModule, name: str) -> None:
    module = make_module(job_types_module(f"[JobType({name!r}, handle, {{}})]"))
    expect_plugin_error(
        PluginError, modules_only(module), f"plugin {module}", "letters, digits, . _ -"
    )


def test_schema_file_missing(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(job_types_module('[JobType("s.missing", handle, "nope.json")]'))
    err = expect_plugin_error(
        SchemaError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / "nope.json"),
        "cannot read schema: No such file or directory",
    )
    assert isinstance(err, SchemaError) and err.file == str(plugin_dir / "nope.json")


def test_schema_file_not_json(make_module: MakeModule, plugin_dir: Path) -> None:
    (plugin_dir / "broken.json").write_text('{\n  "type": "object",\n  "required": [name]\n}\n')
    module = make_module(job_types_module('[JobType("s.broken", handle, "broken.json")]'))
    expect_plugin_error(
        SchemaError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / "broken.json"),
        "schema is not valid JSON: Expecting value at line 3 column 16",
    )


def test_schema_file_not_an_object(make_module: MakeModule, plugin_dir: Path) -> None:
    (plugin_dir / "list.json").write_text("[1, 2]")
    module = make_module(job_types_module('[JobType("s.list", handle, "list.json")]'))
    expect_plugin_error(
        SchemaError, modules_only(module), str(plugin_dir / "list.json"), "must be a JSON object"
    )


def test_schema_file_invalid_against_metaschema(make_module: MakeModule, plugin_dir: Path) -> None:
    (plugin_dir / "typo.json").write_text(
        '{"type": "object", "properties": {"n": {"type": "strng"}}}'
    )
    module = make_module(job_types_module('[JobType("s.typo", handle, "typo.json")]'))
    expect_plugin_error(
        SchemaError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / "typo.json"),
        "schema is invalid at /properties/n/type: 'strng' is not valid",
    )


def test_inline_schema_invalid_names_the_module(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(job_types_module('[JobType("s.inline", handle, {"minLength": -1})]'))
    expect_plugin_error(
        SchemaError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "schema is invalid at /minLength",
    )


def test_schema_of_the_wrong_type(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(job_types_module('[JobType("s.int", handle, 42)]'))
    expect_plugin_error(
        SchemaError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "job type 's.int' has a schema of type int",
    )


@pytest.mark.parametrize(
    "body",
    [
        'JobType("one", handle, {})',  # a JobType, not a list of them
        '[{"name": "one", "handler": handle, "schema": {}}]',
        "None",
    ],
)
def test_job_types_hook_returns_wrong_shape(
    make_module: MakeModule, plugin_dir: Path, body: str
) -> None:
    module = make_module(job_types_module(body))
    expect_plugin_error(
        PluginError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "jobhost_job_types() must return a list of host.JobType",
    )


def test_job_types_hook_raises(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(
        """
        from host import hookimpl

        @hookimpl
        def jobhost_job_types():
            raise KeyError("API_URL")
        """
    )
    expect_plugin_error(
        PluginError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "jobhost_job_types() raised KeyError: 'API_URL'",
    )


def test_hookimpl_for_an_unknown_hook(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(
        """
        from host import hookimpl

        @hookimpl
        def jobhost_not_a_hook():
            pass
        """
    )
    err = expect_plugin_error(
        PluginError,
        modules_only(module),
        "implements an unknown hook",
        "jobhost_not_a_hook",
    )
    assert isinstance(err, PluginError)
    assert (err.plugin, err.file) == (module, str(plugin_dir / f"{module}.py"))
    assert str(err).startswith(f"plugin {module}, {plugin_dir / f'{module}.py'}: ")


def test_hookimpl_with_wrong_arguments(make_module: MakeModule, plugin_dir: Path) -> None:
    module = make_module(
        """
        from host import hookimpl

        @hookimpl
        def jobhost_run_finished(run, extra):
            pass
        """
    )
    expect_plugin_error(
        PluginError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "jobhost_run_finished",
        "extra",
    )


@pytest.mark.parametrize(
    ("policy", "problem"),
    [
        ("retries=3", "unknown policy field(s) retries"),
        ("max_attempts=0", "max_attempts must be an integer >= 1"),
        ('rate="fast"', "rate 'fast' is not of the form N/s, N/min or N/hour"),
        ("priority=5000", "priority must be an integer in [-1000, 1000]"),
        ("timeout_s=0", "timeout_s must be a positive number"),
        ("concurrency=0", "concurrency must be an integer >= 1"),
        ('backoff={"base": 1}', "unknown backoff field(s) base"),
        ('backoff={"factor": 0.5}', "backoff needs base_s >= 0, factor >= 1"),
    ],
)
def test_bad_plugin_policy(
    make_module: MakeModule, plugin_dir: Path, policy: str, problem: str
) -> None:
    module = make_module(job_types_module(f'[JobType("p.bad", handle, {{}}, {policy})]'))
    expect_plugin_error(
        PluginError,
        modules_only(module),
        f"plugin {module}",
        str(plugin_dir / f"{module}.py"),
        "job type 'p.bad'",
        problem,
    )


def test_bad_policy_in_plugins_toml_names_the_toml(make_module: MakeModule, tmp_path: Path) -> None:
    module = make_module(job_types_module('[JobType("p.ok", handle, {})]'))
    toml = tmp_path / "plugins.toml"
    toml.write_text(
        f'[plugins]\nmodules = ["{module}"]\nentry_points = false\n'
        '[types."p.ok"]\nmax_attempts = 0\n'
    )
    expect_plugin_error(
        PluginError, load_plugins_config(toml), f"{toml} [types.'p.ok']", "max_attempts"
    )


def test_plugins_toml_names_a_type_no_plugin_provides(
    make_module: MakeModule, tmp_path: Path
) -> None:
    module = make_module(job_types_module('[JobType("p.real", handle, {})]'))
    toml = tmp_path / "plugins.toml"
    toml.write_text(
        f'[plugins]\nmodules = ["{module}"]\nentry_points = false\n'
        '[types."p.real"]\npriority = 1\n[types."p.ghost"]\npriority = 2\n'
    )
    expect_plugin_error(
        ConfigError,
        load_plugins_config(toml),
        str(toml),
        "names job type(s) no plugin provides: p.ghost",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[plugin]\nmodules = []\n", "unknown section(s) plugin"),
        ("[plugins]\nmodule = []\n", "[plugins] has unknown key(s) module"),
        ('[plugins]\nmodules = "plugins.noop"\n', "modules and disable must be lists of strings"),
        ('[plugins]\ndisable = "example"\n', "modules and disable must be lists of strings"),
        ('[plugins]\nentry_points = "yes"\n', "entry_points must be true or false"),
        ('types = ["noop"]\n', "[plugins] and [types] must be tables"),
        ('plugins = "noop"\n', "[plugins] and [types] must be tables"),
        ("[types]\nnoop = 3\n", "each [types.NAME] must be a table"),
        ("[plugins]\nmodules = [\n[types]\n", "line 3"),
        ("[plugins\n", "line 1"),
    ],
)
def test_bad_plugins_toml(tmp_path: Path, text: str, problem: str) -> None:
    toml = tmp_path / "plugins.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_plugins_config(toml)
    assert str(info.value).startswith(f"{toml}: ")
    assert problem in str(info.value)


# ---------------------------------------------------------------------------------------------
# Payload validation
# ---------------------------------------------------------------------------------------------

STRICT = {
    "type": "object",
    "properties": {
        "email": {"type": "string", "format": "email"},
        "count": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "a/b~c": {"type": "string"},
    },
    "required": ["email", "count"],
    "additionalProperties": False,
}


@pytest.fixture
def validating(make_module: MakeModule) -> Registry:
    module = make_module(
        job_types_module(
            "["
            'JobType("v.strict", handle, STRICT),'
            'JobType("v.tuple", handle, {"properties": {"pair": {"prefixItems": '
            '[{"type": "integer"}, {"type": "string"}]}}}),'
            'JobType("v.draft7", handle, {"$schema": "http://json-schema.org/draft-07/schema#",'
            ' "properties": {"pair": {"items": [{"type": "integer"}, {"type": "string"}]}}}),'
            'JobType("v.object", handle, {"title": "any object", "type": "object"}),'
            'JobType("v.any", handle, {"description": "anything"}),'
            'JobType("v.closed", handle, {"type": "object", "additionalProperties": False}),'
            "]",
            imports=f"STRICT = {STRICT!r}",
        )
    )
    return load_registry(modules_only(module))


def errors_of(registry: Registry, name: str, payload: object) -> list[FieldError]:
    with pytest.raises(ValidationFailed) as info:
        registry.validate(name, payload)
    return info.value.errors


def test_payload_errors_are_json_pointers(validating: Registry) -> None:
    validating.validate("v.strict", {"email": "ada@example.com", "count": 1, "tags": ["a"]})

    errors = errors_of(
        validating, "v.strict", {"email": "a@b.c", "count": 0, "tags": ["ok", 7], "a/b~c": 1}
    )
    assert [e.path for e in errors] == ["/a~1b~0c", "/count", "/tags/1"]
    assert "7 is not of type 'string'" in errors[2].message
    assert "less than the minimum of 1" in errors[1].message


def test_payload_errors_at_the_root(validating: Registry) -> None:
    errors = errors_of(validating, "v.strict", {"count": 2, "extra": True})
    assert [e.path for e in errors] == ["", ""]
    messages = " ".join(e.message for e in errors)
    assert "'email' is a required property" in messages
    assert "'extra' was unexpected" in messages
    assert errors_of(validating, "v.strict", ["not", "an", "object"])[0].path == ""


def test_object_only_schemas_accept_objects_and_still_name_what_fails(validating: Registry) -> None:
    # such schemas skip jsonschema for a payload that fits (host.schemas.quick_accept)
    validating.validate("v.object", {"any": ["thing"]})
    validating.validate("v.any", ["a", "list"])
    validating.validate("v.any", None)
    errors = errors_of(validating, "v.object", ["a", "list"])
    assert [(e.path, e.message) for e in errors] == [("", "['a', 'list'] is not of type 'object'")]
    assert [e.path for e in errors_of(validating, "v.closed", {"extra": 1})] == [""]
    validating.validate("v.closed", {})


def test_validation_failed_message_lists_every_path(validating: Registry) -> None:
    with pytest.raises(ValidationFailed) as info:
        validating.validate("v.strict", {"email": "x@y", "count": "3", "tags": [1]})
    assert str(info.value).startswith("payload for job type 'v.strict' is invalid: ")
    assert "/count: '3' is not of type 'integer'" in str(info.value)
    assert "/tags/0: 1 is not of type 'string'" in str(info.value)


def test_format_email_is_checked(validating: Registry) -> None:
    errors = errors_of(validating, "v.strict", {"email": "not-an-email", "count": 1})
    assert errors == [FieldError("/email", "'not-an-email' is not a 'email'")]


def test_schema_without_dollar_schema_is_2020_12(validating: Registry) -> None:
    # prefixItems exists only in 2020-12; an older draft would ignore it and accept the payload.
    assert [e.path for e in errors_of(validating, "v.tuple", {"pair": [1, 2]})] == ["/pair/1"]
    validating.validate("v.tuple", {"pair": [1, "two", None]})


def test_declared_dollar_schema_is_honoured(validating: Registry) -> None:
    # The array form of items is draft-07 (and invalid in 2020-12): it validates by position.
    assert [e.path for e in errors_of(validating, "v.draft7", {"pair": ["1", 2]})] == [
        "/pair/0",
        "/pair/1",
    ]


def test_unknown_job_type(validating: Registry) -> None:
    with pytest.raises(UnknownJobType, match=r"unknown job type 'v\.nope'"):
        validating.validate("v.nope", {})
    with pytest.raises(UnknownJobType):
        validating.get("v.nope")


# ---------------------------------------------------------------------------------------------
# The bundled plugins
# ---------------------------------------------------------------------------------------------


def test_bundled_plugins_load_from_repo_plugins_toml() -> None:
    config = load_plugins_config(ROOT / "plugins.toml")
    registry = load_registry(config)

    for name, plugin in [
        ("noop", "plugins.noop"),
        ("sleep", "plugins.sleep"),
        ("http.request", "plugins.http_request"),
    ]:
        assert registry.get(name).plugin == plugin
        assert registry.get(name).source == str(ROOT / "schemas" / f"{name}.json")
    http = registry.get("http.request").policy
    assert http.max_attempts == 5
    assert http.timeout_s == 120
    assert http.backoff == Backoff(base_s=2.0, factor=3.0, max_s=600.0, jitter=0.2)
    assert registry.get("sleep").policy.timeout_s == 3600
    assert registry.get("noop").policy.max_attempts == 3

    registry.validate("http.request", {"url": "https://example.com/", "method": "POST"})
    errors = errors_of(registry, "http.request", {"url": "ftp://x", "method": "FETCH"})
    assert [e.path for e in errors] == ["/method", "/url"]

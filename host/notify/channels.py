"""The notification channels of a process, from the `jobhost_notification_channels` hook.

The bundled channels are plugin modules registered through that same hook, from one tuple, so
a third-party channel is no different from ours.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping

from host.config import Settings
from host.errors import PluginError
from host.registry import Registry
from webhooks.outbound.channel import Channel

#: Channel modules shipped with jobhost, registered as plugins unless already registered.
BUNDLED_CHANNEL_MODULES: tuple[str, ...] = ("webhooks.outbound.webhook", "webhooks.outbound.email")


def load_channels(registry: Registry, settings: Settings) -> dict[str, Channel]:
    """Every channel by name; a plugin returning something else, or a name twice, stops
    start-up with a message naming the plugin."""
    pm = registry.pm
    for name in BUNDLED_CHANNEL_MODULES:
        module = importlib.import_module(name)
        if not pm.is_registered(module) and pm.get_plugin(name) is None:
            pm.register(module, name=name)
    channels: dict[str, Channel] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.jobhost_notification_channels.get_hookimpls():
        file = inspect.getsourcefile(impl.function) or "?"
        try:
            provided = impl.function(settings=settings)
        except Exception as exc:
            raise PluginError(
                f"jobhost_notification_channels() raised {type(exc).__name__}: {exc}",
                plugin=impl.plugin_name, file=file,
            ) from exc  # fmt: skip
        if not isinstance(provided, list | tuple):
            raise PluginError("jobhost_notification_channels() must return a list of channels",
                              plugin=impl.plugin_name, file=file)  # fmt: skip
        for channel in provided:
            if not isinstance(channel, Channel) or not isinstance(channel.name, str):
                raise PluginError(
                    f"{channel!r} does not implement webhooks.outbound.channel.Channel",
                    plugin=impl.plugin_name, file=file,
                )  # fmt: skip
            if channel.name in channels:
                raise PluginError(
                    f"channel {channel.name!r} is already provided by plugin "
                    f"{owners[channel.name]}", plugin=impl.plugin_name, file=file,
                )  # fmt: skip
            channels[channel.name] = channel
            owners[channel.name] = impl.plugin_name
    return channels


async def close_channels(channels: Mapping[str, Channel]) -> None:
    for channel in channels.values():
        await channel.aclose()

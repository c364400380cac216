"""Every hook a jobhost plugin can implement, with its contract.

pluggy does not await: a hook implementation may be a coroutine function, and the host awaits
what comes back. Implementations are marked with `host.hookimpl`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from host.config import Settings
    from host.jobtypes import JobType
    from webhooks.outbound.channel import Channel

hookspec = pluggy.HookspecMarker("jobhost")

# ---------------------------------------------------------------------------------------------
# Job types
# ---------------------------------------------------------------------------------------------


@hookspec
def jobhost_job_types() -> list[JobType]:
    """Provide the job types this plugin handles.

    :return: `host.JobType` objects, each with a unique name across all plugins.

    Fires once at start-up of every role; a duplicate name, a handler that is not callable or a
    schema that is not valid against its metaschema stops start-up with a message naming the
    plugin and file.
    """
    raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Run lifecycle (called in the worker, after PostgreSQL has recorded the change)
# ---------------------------------------------------------------------------------------------


@hookspec
def jobhost_run_finished(run: dict[str, Any]) -> None:
    """Observe an attempt that ended (succeeded, failed and will retry, or died).

    :param run: ``id``, ``type``, ``tenant_id``, ``attempt``, ``state`` (the run's new state),
        ``outcome`` (of the attempt), ``result`` and ``error``.

    Fires in the worker after the finish is committed to PostgreSQL, in batches' order. May be a
    coroutine function. An exception is logged and does not affect the run.
    """


@hookspec
def jobhost_run_dead(run: dict[str, Any]) -> None:
    """Observe a run that was dead-lettered (attempts spent or a permanent failure).

    :param run: the same fields as for ``jobhost_run_finished``.

    Fires after ``jobhost_run_finished`` for the same attempt, once per dead run.
    """


# ---------------------------------------------------------------------------------------------
# Notification channels (called in the notifier and the API, once at start-up)
# ---------------------------------------------------------------------------------------------


@hookspec
def jobhost_notification_channels(settings: Settings) -> list[Channel]:
    """Provide notification channels: ways to deliver run events (`webhooks.outbound.channel`).

    :param settings: the process's settings (SMTP host, timeouts, the SSRF allow-list...).
    :return: `Channel` objects, each with a unique `name` across all plugins; a subscription's
        `channel` field picks one. The bundled `webhook` and `email` channels come through this
        same hook.
    """
    raise NotImplementedError

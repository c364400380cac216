"""JSON Schemas of the API's success bodies, for the OpenAPI document (and the test that checks
real responses against it)."""

from __future__ import annotations

from typing import Any

from host.notify.outbox import DELIVERY_STATES
from host.states import RunState

_TIME = {"type": "string", "format": "date-time"}
_OPT_TIME = {"type": ["string", "null"], "format": "date-time"}
_OPT_STR = {"type": ["string", "null"]}


def _obj(required: list[str], props: dict[str, Any], extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}  # fmt: skip


_ATTEMPT = _obj(
    ["attempt", "worker", "started_at", "finished_at", "outcome", "error", "traceback"],
    {"attempt": {"type": "integer"}, "worker": {"type": "string"}, "started_at": _OPT_TIME,
     "finished_at": _TIME, "outcome": {"enum": ["succeeded", "failed", "dead", "timed_out",
     "lost"]}, "error": _OPT_STR, "traceback": _OPT_STR},
)  # fmt: skip

_RUN_FIELDS: dict[str, Any] = {
    "id": {"type": "string", "format": "uuid"}, "tenant_id": {"type": "string"},
    "type": {"type": "string"}, "job_id": _OPT_STR, "state": {"enum": [s.value for s in RunState]},
    "payload": {"type": "object"}, "priority": {"type": "integer"},
    "attempt": {"type": "integer"}, "max_attempts": {"type": "integer"},
    "timeout_s": {"type": "number"}, "idempotency_key": _OPT_STR, "scheduled_for": _OPT_TIME,
    "run_at": _TIME, "created_at": _TIME, "started_at": _OPT_TIME, "finished_at": _OPT_TIME,
    "worker": _OPT_STR, "result": {}, "error": _OPT_STR,
}  # fmt: skip

_SUMMARY = _obj(
    ["id", "type", "state", "created"],
    {"id": {"type": "string"}, "type": {"type": "string"},
     "state": {"enum": [s.value for s in RunState]}, "created": {"type": "boolean"}},
)  # fmt: skip

_JOB = _obj(
    ["id", "name", "type", "payload", "schedule", "priority", "enabled", "next_fire_at",
     "last_fire_at", "created_at", "next_fire_times"],
    {"id": {"type": "string"}, "name": {"type": "string"}, "type": {"type": "string"},
     "payload": {"type": "object"}, "schedule": {"type": ["object", "null"]},
     "priority": {"type": ["integer", "null"]}, "enabled": {"type": "boolean"},
     "next_fire_at": _OPT_TIME, "last_fire_at": _OPT_TIME, "created_at": _TIME,
     "next_fire_times": {"type": "array", "items": _TIME}},
)  # fmt: skip

_COUNTS = _obj(
    list(DELIVERY_STATES),
    {k: {"type": "integer"} for k in DELIVERY_STATES},
)
_STRINGS = {"type": "array", "items": {"type": "string"}}
_SUBSCRIPTION = _obj(
    [
        "id",
        "tenant_id",
        "name",
        "events",
        "job_types",
        "job_ids",
        "channel",
        "destination",
        "enabled",
        "disabled_reason",
        "failure_streak",
        "disabled_at",
        "times_disabled",
        "source",
        "created_at",
        "updated_at",
        "counts",
    ],
    {
        "id": {"type": "string"},
        "tenant_id": {"type": "string"},
        "name": {"type": "string"},
        "events": _STRINGS,
        "job_types": _STRINGS,
        "job_ids": _STRINGS,
        "channel": {"type": "string"},
        "destination": {"type": "object"},
        "enabled": {"type": "boolean"},
        "disabled_reason": _OPT_STR,
        "failure_streak": {"type": "integer"},
        "disabled_at": {**_OPT_TIME, "description": "when it was last disabled"},
        "times_disabled": {
            "type": "integer",
            "description": "how often the notifier disabled it (410 Gone or a failure streak)",
        },
        "source": {"enum": ["api", "config", "job"]},
        "created_at": _TIME,
        "updated_at": _TIME,
        "counts": _COUNTS,
        "secret": {"type": "string", "description": "only in the answer that set it"},
    },
)
_DELIVERY_ATTEMPT = _obj(
    ["attempt", "at", "ok", "status", "latency_ms", "error", "response_excerpt"],
    {
        "attempt": {"type": "integer"},
        "at": _TIME,
        "ok": {"type": "boolean"},
        "status": _OPT_STR,
        "latency_ms": {"type": ["number", "null"]},
        "error": _OPT_STR,
        "response_excerpt": _OPT_STR,
    },
)
_DELIVERY_FIELDS: dict[str, Any] = {
    "id": {"type": "string"},
    "subscription_id": {"type": "string"},
    "event_id": {"type": "string"},
    "event_type": {"type": "string"},
    "run_id": {"type": "string"},
    "state": {"enum": list(DELIVERY_STATES)},
    "attempts": {"type": "integer"},
    "next_attempt_at": _TIME,
    "last_error": _OPT_STR,
    "created_at": _TIME,
    "finished_at": _OPT_TIME,
    "body": {"type": "object"},
}
_DELIVERY = _obj(list(_DELIVERY_FIELDS), _DELIVERY_FIELDS)
_LOGGED_DELIVERY = _obj(
    [*_DELIVERY_FIELDS, "attempt_log"],
    _DELIVERY_FIELDS | {"attempt_log": {"type": "array", "items": _DELIVERY_ATTEMPT}},
)

_NUM_OR_NULL = {"type": ["number", "null"]}

_TRIGGER = _obj(
    [
        "name",
        "hook",
        "path",
        "type",
        "job",
        "scheme",
        "tolerance_s",
        "mapping",
        "max_body_bytes",
        "rate",
        "burst",
        "hmac",
        "enabled",
        "secrets",
        "created_at",
        "updated_at",
        "refusals_not_logged",
    ],
    {
        "name": {"type": "string"},
        "hook": {"type": "string"},
        "path": {"type": "string"},
        "type": _OPT_STR,
        "job": _OPT_STR,
        "scheme": {"enum": ["standard", "github", "stripe", "hmac"]},
        "tolerance_s": {"type": "integer"},
        "mapping": {},
        "max_body_bytes": {"type": "integer"},
        "rate": {"type": ["number", "null"]},
        "burst": {"type": ["integer", "null"]},
        "hmac": {"type": ["object", "null"]},
        "enabled": {"type": "boolean"},
        "secrets": {
            "type": "array",
            "items": _obj(["id", "created_at"], {"id": {"type": "string"}, "created_at": _TIME}),
        },
        "created_at": _TIME,
        "updated_at": _TIME,
        "refusals_not_logged": {
            "type": ["integer", "null"],
            "minimum": 0,
            "description": "refusals answered but, past the refusal log's bucket, not "
            "logged (counted in Redis; null while Redis is unreachable)",
        },
    },
)

_HOOK_DELIVERY = _obj(
    ["id", "received_at", "delivery_id", "outcome", "reason", "status", "run_id", "detail"],
    {
        "id": {"type": "integer"},
        "received_at": _TIME,
        "delivery_id": _OPT_STR,
        "outcome": {"enum": ["accepted", "replay", "rejected"]},
        "reason": {"type": "string"},
        "status": {"type": "integer"},
        "run_id": _OPT_STR,
        "detail": {"type": "string"},
    },
)
_INT_OR_NULL = {"type": ["integer", "null"]}

#: Success body schemas by name; `{"$ref": "#/components/schemas/X"}` points at a sibling.
RESPONSES: dict[str, dict[str, Any]] = {
    "Run": _obj(
        list(_RUN_FIELDS),
        _RUN_FIELDS | {"attempts": {"type": "array", "items": _ATTEMPT},
                       "progress": {}, "created": {"type": "boolean"}},
    ),
    "RunPage": _obj(
        ["runs", "next_cursor"],
        {"runs": {"type": "array", "items": _obj(list(_RUN_FIELDS), _RUN_FIELDS)},
         "next_cursor": {"type": ["string", "null"]}},
    ),
    "Batch": _obj(["runs"], {"runs": {"type": "array", "items": _SUMMARY}}),
    "Triggered": _obj(
        ["id", "type", "state", "job"],
        {"id": {"type": "string"}, "type": {"type": "string"},
         "state": {"enum": [s.value for s in RunState]}, "job": {"type": "string"}},
    ),
    "Subscription": _SUBSCRIPTION,
    "SubscriptionList": _obj(["subscriptions"], {"subscriptions": {
        "type": "array", "items": {"$ref": "#/components/schemas/Subscription"}}}),
    "Delivery": _DELIVERY,
    "DeliveryPage": _obj(["deliveries", "next_cursor"], {
        "deliveries": {"type": "array", "items": _LOGGED_DELIVERY},
        "next_cursor": {"type": ["string", "null"]}}),
    "Job": _JOB,
    "JobList": _obj(
        ["jobs"], {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}
    ),
    "TypeList": _obj(["types"], {"types": {"type": "array", "items": _obj(
        ["name", "plugin", "description", "schema", "policy"],
        {"name": {"type": "string"}, "plugin": {"type": "string"},
         "description": {"type": "string"}, "schema": {"type": "object"},
         "policy": {"type": "object"}},
    )}}),
    "Queues": _obj(["types"], {"types": {"type": "object", "additionalProperties": _obj(
        ["ready", "delayed", "in_flight", "dead", "throttled", "tokens", "limits"],
        {"ready": {"type": "integer"}, "delayed": {"type": "integer"},
         "in_flight": {"type": "integer"}, "dead": {"type": "integer"},
         "throttled": {"type": "integer"}, "tokens": _NUM_OR_NULL,
         "limits": _obj(
             ["rate_per_s", "burst", "concurrency", "lane_rate_per_s", "lane_burst",
              "lane_concurrency"],
             {"rate_per_s": _NUM_OR_NULL, "burst": _INT_OR_NULL, "concurrency": _INT_OR_NULL,
              "lane_rate_per_s": _NUM_OR_NULL, "lane_burst": _INT_OR_NULL,
              "lane_concurrency": _INT_OR_NULL},
         )},
    )}}),
    "Workers": _obj(["workers"], {"workers": {"type": "array", "items": _obj(
        ["id", "host", "pid", "types", "concurrency", "started_at", "heartbeat_age_s", "alive",
         "current_runs"],
        {"id": {"type": "string"}, "host": {"type": "string"}, "pid": {"type": "integer"},
         "types": {"type": ["array", "null"], "items": {"type": "string"}},
         "concurrency": {"type": "integer"}, "started_at": {"type": ["number", "null"]},
         "heartbeat_age_s": {"type": "number"}, "alive": {"type": "boolean"},
         "current_runs": {"type": "array", "items": {"type": "string"}}},
    )}}),
    "Trigger": _TRIGGER,
    "TriggerList": _obj(
        ["triggers"],
        {"triggers": {"type": "array", "items": {"$ref": "#/components/schemas/Trigger"}}},
    ),
    "HookDeliveryPage": _obj(
        ["deliveries", "next_cursor"],
        {"deliveries": {"type": "array", "items": _HOOK_DELIVERY},
         "next_cursor": {"type": ["string", "null"]}},
    ),
    "HookAccepted": _obj(
        ["id", "type", "state", "created", "delivery_id"],
        {"id": {"type": "string"}, "type": {"type": "string"},
         "state": {"enum": [s.value for s in RunState]}, "created": {"type": "boolean"},
         "delivery_id": {"type": "string"}},
    ),
    "Health": _obj(["status"], {"status": {"const": "ok"}}),
    "Ready": _obj(
        ["status", "checks"],
        {"status": {"enum": ["ok", "unavailable"]},
         "checks": _obj(["postgresql", "redis"], {"postgresql": {"type": "string"},
                                                 "redis": {"type": "string"}})},
    ),
    "OpenAPI": {"type": "object", "required": ["openapi", "paths"]},
}  # fmt: skip

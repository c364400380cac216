"""Every Redis key jobhost uses, in one place.

All keys of a namespace share the hash tag `{namespace}`, so a namespace lives on one Redis
Cluster shard (the Lua scripts touch many of them at once) and namespaces spread across shards.
"""

from __future__ import annotations

import re

from host.errors import ConfigError

_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class Keys:
    """Key names for one namespace."""

    def __init__(self, namespace: str) -> None:
        if not _NAMESPACE.match(namespace):
            raise ConfigError(
                f"namespace {namespace!r} must be 1-64 characters of letters, digits, _ . -"
            )
        self.namespace = namespace
        #: Prefix of every key; the Lua scripts build ready-queue names from it.
        self.prefix = f"jh:{{{namespace}}}:"
        #: HASH run id -> envelope JSON (what a worker needs to start the run).
        self.env = self.prefix + "env"
        #: HASH run id -> "priority|max_attempts|type", read by scripts without decoding JSON.
        self.meta = self.prefix + "meta"
        #: HASH run id -> number of attempts started (the claim counts them).
        self.att = self.prefix + "att"
        #: HASH run id -> "worker:attempt" of the lease holder, the fencing token.
        self.owner = self.prefix + "owner"
        #: ZSET run id -> lease deadline in ms (Redis clock): the in-flight set.
        self.inflight = self.prefix + "inflight"
        #: ZSET run id -> due time in ms (Redis clock): delayed runs and retries in backoff.
        self.delayed = self.prefix + "delayed"
        #: ZSET run id -> expiry time: attempts spent by lease expiry, awaiting a dead record.
        self.dying = self.prefix + "dying"
        #: HASH run id -> last progress report (JSON) of a running run.
        self.progress = self.prefix + "progress"
        #: SET of job type names that have had runs enqueued.
        self.types = self.prefix + "types"
        #: LIST of wake tokens: enqueue pushes one, an idle worker blocks on it.
        self.wake = self.prefix + "wake"
        #: HASH type -> "rate_per_s|burst|concurrency" in force (empty field: unlimited).
        self.limits = self.prefix + "limits"
        #: HASH type -> "tokens|updated_ms": each rate-limited type's token bucket.
        self.buckets = self.prefix + "buckets"
        #: HASH type -> runs of that type in flight (for concurrency limits).
        self.active = self.prefix + "active"
        #: HASH type -> claims that found runs waiting but no token or slot.
        self.throttled = self.prefix + "throttled"
        #: HASH type -> where the next claim starts in the type's ring of lanes.
        self.ring = self.prefix + "ring"
        #: HASH namespace settings read by the scripts: age_step_ms (priority ageing).
        self.config = self.prefix + "config"
        #: HASH worker id -> heartbeat JSON (host, pid, types, running, last seen).
        self.workers = self.prefix + "workers"
        #: STRING owner id of the scheduler leader; expires with the lease (PX).
        self.leader = self.prefix + "leader"
        #: STRING counter handing out leader epochs (fencing tokens).
        self.leader_epoch = self.prefix + "leader:epoch"
        #: STRING generation marker, written by the leader once Redis agrees with PostgreSQL; a
        #: missing marker means Redis lost its data and the leader rebuilds it from PostgreSQL.
        self.generation = self.prefix + "generation"
        #: HASH trigger id -> "tokens|updated_ms": inbound webhook triggers' token buckets.
        self.hook_buckets = self.prefix + "hook:buckets"
        #: HASH trigger id -> count of refused deliveries answered but not logged (over the
        #: refusal log's bucket, "<trigger id>|refused" in hook_buckets).
        self.hook_unlogged = self.prefix + "hook:unlogged"

    def worker_wake(self, worker_id: str) -> str:
        """LIST: a token here ends one worker's idle wait (its own shutdown), not another's."""
        return self.prefix + "wake:" + worker_id

    def ready(self, job_type: str, lane: str = "default") -> str:
        """ZSET run id -> score (priority, then FIFO): the ready queue of one lane of a type.

        A lane is a tenant, or a tenant and a payload key (see host.lanes); claims serve a
        type's lanes in turn."""
        return self.prefix + "q:" + job_type + "#" + lane

    def lanes(self, job_type: str) -> str:
        """ZSET lane -> ring position: the lanes of a type that have ready runs."""
        return self.prefix + "lanes:" + job_type

-- Limits changed at run time (`jobhost limits set`), overriding the plugins' and plugins.toml's
-- policy until reset. Kept here, the source of truth, and published to Redis, where the claim
-- script enforces them.

CREATE TABLE type_limits (
    tenant_id   text        NOT NULL DEFAULT 'default',
    type        text        NOT NULL,
    rate        text,               -- "10/s", "600/min"; NULL: no override
    burst       integer CHECK (burst >= 1),
    concurrency integer CHECK (concurrency >= 1),
    lane_rate   text,               -- the same, per lane (tenant, or tenant and payload key)
    lane_burst  integer CHECK (lane_burst >= 1),
    lane_concurrency integer CHECK (lane_concurrency >= 1),
    unlimited   text[]      NOT NULL DEFAULT '{}',  -- limits explicitly lifted
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, type)
);

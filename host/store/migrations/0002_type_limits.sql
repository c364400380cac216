-- Limits changed at run time (`jobhost limits set`), overriding the plugins' and plugins.toml's
-- policy until reset. Kept here, the source of truth, and published to Redis, where the claim
-- script enforces them.

CREATE TABLE type_limits (
    tenant_id   text        NOT NULL DEFAULT 'default',
    type        text        NOT NULL,
    rate        text,               -- "10/s", "600/min"; NULL: no override
    burst       integer CHECK (burst >= 1),
    concurrency integer CHECK (concurrency >= 1),
    unlimited   text[]      NOT NULL DEFAULT '{}',  -- fields explicitly lifted: rate, concurrency
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, type)
);

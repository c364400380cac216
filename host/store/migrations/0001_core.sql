-- Core tables: job definitions, runs and attempts. Every row carries tenant_id from the start,
-- so tenant isolation never needs a rewrite.

CREATE TABLE jobs (
    tenant_id   text        NOT NULL DEFAULT 'default',
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text        NOT NULL,
    type        text        NOT NULL,
    payload     jsonb       NOT NULL DEFAULT '{}',
    schedule    jsonb,                  -- {"cron", "timezone", "misfire", ...}; NULL: on demand
    priority    integer,
    policy      jsonb       NOT NULL DEFAULT '{}',  -- overrides of the type's policy
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE runs (
    tenant_id       text        NOT NULL DEFAULT 'default',
    id              uuid        PRIMARY KEY,  -- UUIDv7, made by the client
    type            text        NOT NULL,
    job_id          uuid        REFERENCES jobs (id) ON DELETE SET NULL,
    state           text        NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                    'retrying', 'succeeded', 'dead', 'cancelled')),
    payload         jsonb       NOT NULL,
    priority        integer     NOT NULL DEFAULT 0,
    attempt         integer     NOT NULL DEFAULT 0,  -- attempts started, as last recorded
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    timeout_s       double precision NOT NULL,
    idempotency_key text,
    scheduled_for   timestamptz,          -- the cron tick that created it, if any
    run_at          timestamptz NOT NULL DEFAULT now(),  -- earliest start (delay or retry)
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,          -- start of the latest attempt
    finished_at     timestamptz,
    worker          text,
    result          jsonb,
    error           text
) WITH (fillfactor = 80);  -- room for HOT updates: a run row is updated a few times

CREATE UNIQUE INDEX runs_idempotency ON runs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX runs_cron_tick ON runs (job_id, scheduled_for)
    WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_tenant_created ON runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX runs_active ON runs (state, run_at)
    WHERE state IN ('scheduled', 'queued', 'running', 'retrying');

CREATE TABLE attempts (
    tenant_id   text        NOT NULL DEFAULT 'default',
    -- No foreign key: the only writer (the finish statement) joins runs, so the check trigger
    -- would only double the cost of every attempt row; deleting runs deletes their attempts.
    run_id      uuid        NOT NULL,
    attempt     integer     NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz,
    finished_at timestamptz NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('succeeded', 'failed', 'dead',
                                'timed_out', 'lost')),
    error       text,
    traceback   text,
    PRIMARY KEY (run_id, attempt)
);

-- Inbound webhook triggers: a trigger of a tenant exposes POST /hooks/{hook}. Names are per
-- tenant (the management API addresses a trigger by name); `hook` is a server-made random id,
-- unique across tenants, so the public URL neither collides with nor reveals another tenant's
-- names and cannot be guessed.

CREATE TABLE triggers (
    tenant_id      text        NOT NULL,
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text        NOT NULL,
    hook           text        NOT NULL UNIQUE,
    type           text,                 -- the job type to run, or
    job_id         uuid        REFERENCES jobs (id) ON DELETE SET NULL,  -- a definition's
    scheme         text        NOT NULL CHECK (scheme IN ('standard', 'github', 'stripe', 'hmac')),
    tolerance_s    integer     NOT NULL DEFAULT 300,
    mapping        jsonb,                -- template turning the event into the payload
    max_body_bytes integer     NOT NULL,
    rate_per_s     double precision,     -- NULL: no rate limit
    burst          integer,
    options        jsonb       NOT NULL DEFAULT '{}',  -- hmac: header, encoding, prefix, ...
    enabled        boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Signing secrets, several per trigger during a rotation. Kept in clear text: verifying an HMAC
-- needs the key itself. The API never returns them (write-only).
CREATE TABLE trigger_secrets (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  text        NOT NULL,
    trigger_id uuid        NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trigger_secrets_trigger ON trigger_secrets (trigger_id, created_at);

-- Every delivery received for a trigger: accepted (with its run), a replay (the earlier run),
-- or rejected with the reason the caller is not told in detail.
CREATE TABLE trigger_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text        NOT NULL,
    trigger_id  uuid        NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    received_at timestamptz NOT NULL DEFAULT now(),
    delivery_id text,
    outcome     text        NOT NULL CHECK (outcome IN ('accepted', 'replay', 'rejected')),
    reason      text        NOT NULL,
    status      integer     NOT NULL,
    run_id      uuid,
    detail      text        NOT NULL DEFAULT ''
);
CREATE INDEX trigger_deliveries_trigger ON trigger_deliveries (trigger_id, id DESC);

-- Replay protection: one row per (trigger, delivery id) that made a run, written in the same
-- transaction as the run, so neither can exist without the other. A second delivery with the
-- same id finds this row and answers with the same run.
CREATE TABLE trigger_replays (
    trigger_id  uuid        NOT NULL REFERENCES triggers (id) ON DELETE CASCADE,
    delivery_id text        NOT NULL,
    run_id      uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trigger_id, delivery_id)
);

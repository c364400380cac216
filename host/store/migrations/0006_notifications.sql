-- Outbound notifications: subscriptions, the outbox of deliveries and the log of attempts.
--
-- Delivery rows are written by the run-finish statement itself (host/store/runs.py), in the same
-- transaction as the run's state change, so an event is never lost nor invented. The notifier
-- role claims due rows with FOR UPDATE SKIP LOCKED plus a lease (lease_until, lease_token), so
-- several notifiers never send the same attempt at once and a killed one's claims come back.

CREATE TABLE subscriptions (
    tenant_id       text        NOT NULL,
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text        NOT NULL,
    events          text[]      NOT NULL CHECK (cardinality(events) > 0 AND events <@
                                    ARRAY['run.succeeded', 'run.failed', 'run.dead']),
    job_types       text[]      NOT NULL DEFAULT '{}',   -- empty: every type
    job_ids         uuid[]      NOT NULL DEFAULT '{}',   -- empty: every job definition (and none)
    channel         text        NOT NULL,                -- "webhook", "email", a plugin's
    destination     jsonb       NOT NULL,                -- checked by the channel
    secret          text,                                -- whsec_...: signs webhooks; write-only
    enabled         boolean     NOT NULL DEFAULT true,
    disabled_reason text,
    failure_streak  integer     NOT NULL DEFAULT 0,      -- deliveries failed in a row
    source          text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'config', 'job')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- The finish statement's probe: one index lookup per finished run, on a table that is usually
-- tiny or empty.
CREATE INDEX subscriptions_match ON subscriptions (tenant_id) WHERE enabled;

CREATE TABLE deliveries (
    tenant_id       text        NOT NULL,
    -- md5(subscription id, event id) as a uuid: the same event for the same subscription is one
    -- row whatever writes it twice (ON CONFLICT (id)), with no second unique index to maintain.
    id              uuid        PRIMARY KEY,
    -- No foreign key: the finish statement, the only hot writer, joins subscriptions already,
    -- and the check would lock the subscription row (FOR KEY SHARE) for every event written.
    -- Deleting a subscription deletes its deliveries (host/notify/store.py).
    subscription_id uuid        NOT NULL,
    event_id        text        NOT NULL,   -- stable across retries: webhook-id, dedupe key
    event_type      text        NOT NULL,
    run_id          uuid        NOT NULL,
    -- The event, as of the state change, in plain columns: the run path only copies values;
    -- the JSON body is built when a notifier claims the row (host/notify/outbox.py BODY).
    run_type        text        NOT NULL,
    run_state       text        NOT NULL,   -- succeeded, retrying or dead
    attempt         integer     NOT NULL,
    max_attempts    integer     NOT NULL,
    outcome         text        NOT NULL,   -- of the attempt
    job_id          uuid,
    next_run_at     timestamptz,            -- when retrying
    run_created_at  timestamptz NOT NULL,
    started_at      timestamptz,
    attempt_finished_at timestamptz NOT NULL,
    run_finished_at timestamptz,
    result          jsonb,
    error           text,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,   -- attempts recorded
    retry_base      integer     NOT NULL DEFAULT 0,   -- attempts before the latest redelivery
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,            -- claimed by a notifier until then
    lease_token     uuid,                   -- fences the claimant's writes
    digest_key      text,                   -- set when the channel groups this delivery
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

-- The claim: per subscription, its due deliveries in order.
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, created_at DESC, id DESC);
CREATE INDEX deliveries_leased ON deliveries (subscription_id)
    WHERE state = 'pending' AND lease_until IS NOT NULL;  -- sends in flight per subscription
CREATE INDEX deliveries_finished ON deliveries (finished_at)
    WHERE state IN ('succeeded', 'failed');  -- retention
CREATE INDEX deliveries_digest ON deliveries (subscription_id, digest_key)
    WHERE state = 'pending' AND digest_key IS NOT NULL;

CREATE TABLE delivery_attempts (
    delivery_id      uuid        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    ok               boolean     NOT NULL,
    status           text,                  -- "200", "refused", "timeout", "550"...
    latency_ms       double precision,
    error            text,
    response_excerpt text,
    notifier         text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Wake notifiers when deliveries are written (delivered at commit; NOTIFY folds duplicates).
CREATE FUNCTION jobhost_deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_deliveries) THEN
        PERFORM pg_notify('jobhost_deliveries', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER deliveries_wake AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION jobhost_deliveries_notify();

-- Retention of the inbound webhook tables (host/scheduler/retention.py) finds old rows by
-- time; and a subscription the notifier disables records when, and how often that happened,
-- so the owner sees it in `jobhost subscriptions list` and the API.

CREATE INDEX trigger_deliveries_received ON trigger_deliveries (received_at);
CREATE INDEX trigger_replays_received ON trigger_replays (received_at);

ALTER TABLE subscriptions
    ADD COLUMN disabled_at    timestamptz,                -- when it was last disabled
    ADD COLUMN times_disabled integer NOT NULL DEFAULT 0; -- by the notifier (410 or a streak)

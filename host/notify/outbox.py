"""The outbox write, as a CTE body for the run-finish statement (host/store/runs.py).

It reads the `moved` CTE (the run rows the finish actually changed, so a fenced finish invents
nothing) and inserts one delivery per event and matching enabled subscription. Events per
finished attempt: `run.succeeded`; `run.failed` for every attempt that did not succeed (with
`will_retry`); `run.dead` as well when the run was dead-lettered (attempts spent, a permanent
failure, a timeout or a lease lost for good). The event id is derived from (run, attempt, type),
so it is the same for every subscription and every retry; the delivery's id is derived from
(subscription, event id), so a repeated finish of the same attempt conflicts and adds nothing.

The row holds the event's values in plain columns (copying them is cheap; formatting JSON on the
run path was most of the cost); `BODY` turns them into the event when a notifier claims it.
With no subscriptions it costs one index probe of an empty index per finished run.
"""

from __future__ import annotations

#: Event types, in the order a run can produce them.
EVENTS = ("run.succeeded", "run.failed", "run.dead")
#: The states of a delivery (the outbox row): waiting or retrying, delivered, given up.
DELIVERY_STATES = ("pending", "succeeded", "failed")

OUTBOX_INSERT = """
INSERT INTO deliveries (id, tenant_id, subscription_id, event_id, event_type, run_id, run_type,
                        run_state, attempt, max_attempts, outcome, job_id, next_run_at,
                        run_created_at, started_at, attempt_finished_at, run_finished_at, result,
                        error)
SELECT md5(s.id::text || e.event_id)::uuid, m.tenant_id, s.id, e.event_id, e.type, m.id, m.type,
       m.state, m.attempt, m.max_attempts, m.outcome, m.job_id,
       CASE WHEN m.state = 'retrying' THEN m.run_at END, m.created_at, m.started_at,
       m.attempt_finished_at, m.finished_at, m.result, m.error
FROM moved m
JOIN subscriptions s ON s.tenant_id = m.tenant_id AND s.enabled
CROSS JOIN LATERAL (
    SELECT t.type, 'msg_' || md5(m.id::text || ':' || m.attempt || ':' || t.type) AS event_id
    FROM unnest(CASE m.state WHEN 'succeeded' THEN ARRAY['run.succeeded']
                             WHEN 'retrying' THEN ARRAY['run.failed']
                             ELSE ARRAY['run.failed', 'run.dead'] END) AS t(type)
) e
WHERE e.type = ANY (s.events)
  AND (cardinality(s.job_types) = 0 OR m.type = ANY (s.job_types))
  AND (cardinality(s.job_ids) = 0 OR m.job_id = ANY (s.job_ids))
ON CONFLICT (id) DO NOTHING"""

#: The event body (what a webhook POSTs) of the deliveries row `d`, built off the run path.
BODY = """jsonb_build_object(
    'type', d.event_type, 'id', d.event_id, 'timestamp', d.created_at,
    'data', jsonb_build_object(
        'run', jsonb_build_object(
            'id', d.run_id, 'type', d.run_type, 'state', d.run_state, 'attempt', d.attempt,
            'max_attempts', d.max_attempts, 'outcome', d.outcome,
            'will_retry', d.run_state = 'retrying', 'next_attempt_at', d.next_run_at,
            'created_at', d.run_created_at, 'started_at', d.started_at,
            'attempt_finished_at', d.attempt_finished_at, 'finished_at', d.run_finished_at,
            'result', d.result, 'error', d.error),
        'job', CASE WHEN d.job_id IS NOT NULL THEN jsonb_build_object(
            'id', d.job_id, 'name', (SELECT j.name FROM jobs j WHERE j.id = d.job_id)) END,
        'tenant', d.tenant_id))"""

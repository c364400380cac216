"""The outbox write, as a CTE body for the run-finish statement (host/store/runs.py).

It reads the `moved` CTE (the run rows the finish actually changed, so a fenced finish invents
nothing) and inserts one delivery per event and matching enabled subscription. Events per
finished attempt: `run.succeeded`; `run.failed` for every attempt that did not succeed (with
`will_retry`); `run.dead` as well when the run was dead-lettered (attempts spent, a permanent
failure, a timeout or a lease lost for good). The event id is derived from (run, attempt, type),
so it is the same for every subscription and every retry, and a repeated finish conflicts.

With no subscriptions it costs one index probe of an empty index per finished run.
"""

from __future__ import annotations

#: Event types, in the order a run can produce them.
EVENTS = ("run.succeeded", "run.failed", "run.dead")

OUTBOX_INSERT = """
INSERT INTO deliveries (tenant_id, subscription_id, event_id, event_type, run_id, body)
SELECT m.tenant_id, s.id, e.event_id, e.type, m.id,
       jsonb_build_object(
           'type', e.type, 'id', e.event_id, 'timestamp', now(),
           'data', jsonb_build_object(
               'run', jsonb_build_object(
                   'id', m.id, 'type', m.type, 'state', m.state, 'attempt', m.attempt,
                   'max_attempts', m.max_attempts, 'outcome', m.outcome,
                   'will_retry', m.state = 'retrying',
                   'next_attempt_at', CASE WHEN m.state = 'retrying' THEN m.run_at END,
                   'created_at', m.created_at, 'started_at', m.started_at,
                   'attempt_finished_at', m.attempt_finished_at, 'finished_at', m.finished_at,
                   'result', m.result, 'error', m.error),
               'job', CASE WHEN m.job_id IS NOT NULL THEN jsonb_build_object(
                   'id', m.job_id,
                   'name', (SELECT j.name FROM jobs j WHERE j.id = m.job_id)) END,
               'tenant', m.tenant_id))
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
ON CONFLICT (subscription_id, event_id) DO NOTHING"""

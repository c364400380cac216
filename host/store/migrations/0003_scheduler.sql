-- The scheduler: when each job definition fires next, the leader epoch that fences leader writes,
-- and indexes for overlap checks, reconciliation and retention.

ALTER TABLE jobs ADD COLUMN next_fire_at timestamptz;   -- the first tick not yet handled
ALTER TABLE jobs ADD COLUMN last_fire_at timestamptz;   -- the latest tick fired
CREATE INDEX jobs_due ON jobs (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;

-- One row per Redis namespace: the highest leader epoch seen and its owner. Every leader write
-- happens in a transaction that first moves this row forward (or finds it already its own), so a
-- leader superseded by a newer epoch has its writes rejected (fault-matrix S2).
CREATE TABLE scheduler_leader (
    namespace   text        PRIMARY KEY,
    epoch       bigint      NOT NULL,
    owner       text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX runs_job_active ON runs (job_id, state)
    WHERE job_id IS NOT NULL AND state IN ('scheduled', 'queued', 'running', 'retrying');
CREATE INDEX runs_active_id ON runs (id)
    WHERE state IN ('scheduled', 'queued', 'running', 'retrying');
CREATE INDEX runs_finished ON runs (finished_at)
    WHERE state IN ('succeeded', 'dead', 'cancelled');

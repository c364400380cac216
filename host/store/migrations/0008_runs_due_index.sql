-- Only scheduled and retrying runs wait for a time (`run_at`): promote_due is the one query that
-- reads runs by state and run_at, and it asks for those two states only. Indexing queued and
-- running runs there too cost every enqueued run an index entry (one of four) that nothing
-- read. Reconciliation pages active runs through runs_active_id, jobs' overlap checks through
-- runs_job_active; neither changes.

DROP INDEX runs_active;
CREATE INDEX runs_due ON runs (state, run_at) WHERE state IN ('scheduled', 'retrying');

-- Only scheduled and retrying runs wait for a time (`run_at`): promote_due is the one query that
-- reads runs by state and run_at, and it asks for those two states only. Indexing queued and
-- running runs there too cost every enqueued run an index entry (one of four) that nothing
-- read. Reconciliation pages active runs through runs_active_id, jobs' overlap checks through
-- runs_job_active; neither changes.
--
-- The new index is built before the old one is dropped: building it blocks writes to `runs`
-- (not reads) for as long as it takes on a large history; dropping the old one then needs its
-- exclusive lock only until this migration commits. An operator with a large history may build
-- runs_due beforehand with CREATE INDEX CONCURRENTLY (docs/operations.md): IF NOT EXISTS keeps it.

CREATE INDEX IF NOT EXISTS runs_due ON runs (state, run_at) WHERE state IN ('scheduled', 'retrying');
DROP INDEX IF EXISTS runs_active;

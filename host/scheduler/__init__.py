"""The scheduler role: leader lease, cron firing, reconciliation with PostgreSQL, retention."""

"""PostgreSQL, the source of truth: migrations, job definitions, runs and attempts."""

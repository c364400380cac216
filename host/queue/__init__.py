"""The Redis fast path: ready queues, leases, delayed runs, one Lua script per operation."""

-- API keys: only a SHA-256 hash of each key is stored (keys are 256-bit random, so a plain hash
-- is safe and lets a request find its key by an indexed equality lookup: no per-key comparison
-- loop, so no timing oracle). Scopes are read, write, admin; a revoked key stays for the record.

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    prefix       text        NOT NULL,  -- the key's first characters, to recognise it in lists
    key_hash     bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL CHECK (scopes <@ ARRAY['read', 'write', 'admin']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

-- The HTTP service: API keys (only their sha256 is stored) and the threads each tenant owns.
-- Runs and images already carry a tenant column (003_runs.sql).
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    tenant       text NOT NULL,
    key_hash     text NOT NULL UNIQUE,              -- sha256 hex of the secret
    prefix       text NOT NULL,                     -- first characters of the secret, to recognise it
    admin        boolean NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE api_threads (
    tenant       text NOT NULL,
    id           text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
CREATE INDEX images_tenant ON images (tenant, id);

-- Runs are recorded from the moment a request is accepted, by the process that runs them: `owner` is that
-- process's advisory-lock key (db/owners.py), so a run whose owner holds no lock any more (killed, or its
-- connection lost with the database) can be found and marked interrupted instead of staying 'running'.
ALTER TABLE runs ADD COLUMN owner integer;  -- NULL: recorded before this migration, or by a process without a lease
ALTER TABLE runs ALTER COLUMN status SET DEFAULT 'queued';
ALTER TABLE runs ADD CONSTRAINT runs_status_known
    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted'));
CREATE INDEX runs_unfinished ON runs (owner) WHERE status IN ('queued', 'running');

-- Adapters whose file is missing, unsafe, outside the adapter folders, shared with another entry or unreadable:
-- left out of retrieval until the record changes (`content_hash`) or `loracle catalog check` finds the file fixed.
CREATE TABLE adapter_quarantine (
    adapter_id    bigint PRIMARY KEY REFERENCES adapters (id) ON DELETE CASCADE,
    reason        text NOT NULL,
    content_hash  text NOT NULL,     -- the record as it was when quarantined
    found_at      timestamptz NOT NULL DEFAULT now()
);

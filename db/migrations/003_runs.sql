-- Agent runs and the images they wrote. Threads (conversation state) live in LangGraph's own
-- checkpoint tables, created by langgraph-checkpoint-postgres in the same database.
CREATE TABLE runs (
    id           uuid PRIMARY KEY,
    thread_id    text NOT NULL,
    tenant       text NOT NULL DEFAULT 'local',
    prompt       text NOT NULL,
    status       text NOT NULL DEFAULT 'running',   -- running | done | failed | cancelled
    planner      text,                              -- llm | offline (with the reason it fell back)
    plan         jsonb,
    candidates   jsonb,
    picks        jsonb,
    attempts     jsonb NOT NULL DEFAULT '[]',        -- every mix tried, with inspection findings
    nfe          integer,
    timings      jsonb NOT NULL DEFAULT '{}',
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX runs_thread ON runs (tenant, thread_id, created_at);

CREATE TABLE images (
    id           uuid PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    tenant       text NOT NULL DEFAULT 'local',
    attempt      integer NOT NULL DEFAULT 0,
    path         text NOT NULL,                     -- relative to LORACLE_HOME/images
    sha256       text NOT NULL,
    seed         bigint NOT NULL,
    mix          jsonb NOT NULL,
    nfe          integer NOT NULL,
    parameters   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX images_run ON images (run_id);

-- Pairs of adapters that failed together: inspection learns from earlier runs.
CREATE TABLE adapter_conflicts (
    adapter_a    bigint NOT NULL,
    adapter_b    bigint NOT NULL,
    failures     integer NOT NULL DEFAULT 1,
    reason       text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (adapter_a, adapter_b),
    CHECK (adapter_a < adapter_b)
);

-- Eval harness runs (`loracle eval all`): one row per run, with its git commit, settings, seeds and the
-- metrics of every suite, so two runs can be compared later without their folders.
CREATE TABLE eval_runs (
    id           text PRIMARY KEY,                  -- the run folder's name
    git_commit   text,
    quick        boolean NOT NULL DEFAULT false,
    suites       text[] NOT NULL,
    settings     jsonb NOT NULL DEFAULT '{}',
    seeds        jsonb NOT NULL DEFAULT '{}',
    results      jsonb NOT NULL,                    -- results.json as written
    folder       text,
    status       text NOT NULL,                     -- ok | partial (some suite failed)
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX eval_runs_created ON eval_runs (created_at);

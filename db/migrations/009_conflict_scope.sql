-- Conflict memory scoped per tenant, base model and composition method, with evidence that decays (#28):
-- one tenant's failures on one base model under one method say nothing about another's. Rows recorded
-- before this migration were global; they are kept under base model '' (matching none) rather than deleted.
ALTER TABLE adapter_conflicts
    ADD COLUMN tenant     text NOT NULL DEFAULT 'local',
    ADD COLUMN base_model text NOT NULL DEFAULT '',
    ADD COLUMN method     text NOT NULL DEFAULT 'merge',
    ADD COLUMN evidence   real;
UPDATE adapter_conflicts SET evidence = failures;
ALTER TABLE adapter_conflicts
    ALTER COLUMN evidence SET NOT NULL,
    ALTER COLUMN evidence SET DEFAULT 1,
    DROP CONSTRAINT adapter_conflicts_pkey,
    ADD PRIMARY KEY (tenant, base_model, method, adapter_a, adapter_b);

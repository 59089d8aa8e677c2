-- On Ray (`loracle serve --ray`): which Sampler replica drew a run's images, and whether a replica died
-- mid-request and another one finished it. NULL / false for runs sampled in process.
ALTER TABLE runs ADD COLUMN sampler_replica text;
ALTER TABLE runs ADD COLUMN sampler_retried boolean NOT NULL DEFAULT false;

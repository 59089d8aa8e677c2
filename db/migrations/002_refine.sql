-- The refiner's bookkeeping (tools/refine): who refined a row and from which inputs, the cleaned
-- trigger words (trigger_words stays as imported), and a cache of model answers by input hash so a
-- rerun, or a switch back from the offline refiner, costs no model call.
ALTER TABLE adapters
    ADD COLUMN refined_by          text,          -- model name, or 'offline'
    ADD COLUMN refine_hash         text,          -- hash of the refiner's inputs (and refiner); equal = up to date
    ADD COLUMN refine_note         text,          -- why a row fell back to the offline refiner, if it did
    ADD COLUMN refined_at          timestamptz,
    ADD COLUMN clean_trigger_words text[];

CREATE TABLE refine_cache (
    input_hash  text NOT NULL,
    model       text NOT NULL,
    answer      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (input_hash, model)
);

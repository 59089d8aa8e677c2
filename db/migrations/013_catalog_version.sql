-- A number every write to the catalog's vectors (or to the adapter columns the search filters read)
-- raises, inside the writing transaction: a process that holds the catalog's vectors in memory
-- (tools/memory_search.py) reads it before each search and reloads when it moved, whichever process
-- imported, embedded or refined. Read before the vectors, it can only make a reload early, never late.
CREATE TABLE catalog_version (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint NOT NULL
);
INSERT INTO catalog_version (one, version) VALUES (true, 0);

CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = version + 1;
    RETURN NULL;
END
$$;

-- per statement (a multi-row statement raises it once); a writer holds the row until it commits, so
-- concurrent writers of vectors take turns, each for one short batch transaction (db.vectors.write_embeddings)
CREATE TRIGGER adapter_embeddings_catalog_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON adapter_embeddings
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER adapters_catalog_version AFTER UPDATE OF blocklisted, tags, base_model OR DELETE OR TRUNCATE ON adapters
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();

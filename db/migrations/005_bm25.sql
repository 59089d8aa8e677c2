-- BM25 for the lexical list: PostgreSQL's ts_rank_cd has no inverse document frequency, so a common
-- word ("style") counts as much as a rare one ("ukiyo-e"). Term statistics are kept here, in step
-- with adapters.search_text through triggers, so every write path (import, refine, edits) stays
-- consistent. Term frequencies are kept per tsvector weight class (A name + trigger words, B tags,
-- C refined description, D description) so db/search.py can weight the fields at query time.
CREATE TABLE adapter_terms (
    term        text NOT NULL,
    adapter_id  bigint NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
    tf_a        real NOT NULL,
    tf_b        real NOT NULL,
    tf_c        real NOT NULL,
    tf_d        real NOT NULL,
    doc_len     real NOT NULL,     -- positions in the adapter's whole tsvector
    PRIMARY KEY (term, adapter_id)
);
CREATE INDEX adapter_terms_adapter ON adapter_terms (adapter_id);

-- One row: adapter count and total length, for IDF and the average document length.
CREATE TABLE lexical_stats (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    docs       bigint NOT NULL DEFAULT 0,
    total_len  double precision NOT NULL DEFAULT 0
);
INSERT INTO lexical_stats (id) VALUES (true);

CREATE FUNCTION loracle_tsvector_len(tsvector) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT coalesce(sum(cardinality(positions)), 0)::double precision FROM unnest($1) $$;

CREATE FUNCTION loracle_index_terms(adapter bigint, vector tsvector) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO adapter_terms (term, adapter_id, tf_a, tf_b, tf_c, tf_d, doc_len)
    SELECT u.lexeme, adapter,
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'A'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'B'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'C'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'D'),
           loracle_tsvector_len(vector)
    FROM unnest(vector) u
    $$;

CREATE FUNCTION loracle_adapter_terms_sync() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM adapter_terms WHERE adapter_id = OLD.id;
        UPDATE lexical_stats SET docs = docs - 1, total_len = total_len - loracle_tsvector_len(OLD.search_text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM loracle_index_terms(NEW.id, NEW.search_text);
        UPDATE lexical_stats SET docs = docs + 1, total_len = total_len + loracle_tsvector_len(NEW.search_text);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER adapters_terms_insert AFTER INSERT ON adapters
    FOR EACH ROW EXECUTE FUNCTION loracle_adapter_terms_sync();
CREATE TRIGGER adapters_terms_update AFTER UPDATE ON adapters
    FOR EACH ROW WHEN (OLD.search_text IS DISTINCT FROM NEW.search_text) EXECUTE FUNCTION loracle_adapter_terms_sync();
CREATE TRIGGER adapters_terms_delete AFTER DELETE ON adapters
    FOR EACH ROW EXECUTE FUNCTION loracle_adapter_terms_sync();

-- Adapters imported before this migration.
SELECT loracle_index_terms(id, search_text) FROM adapters;
UPDATE lexical_stats SET docs = (SELECT count(*) FROM adapters),
                         total_len = (SELECT coalesce(sum(loracle_tsvector_len(search_text)), 0) FROM adapters);

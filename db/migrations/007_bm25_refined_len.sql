-- The refined description's share of each BM25 document (tsvector class C), so db/search.py can score
-- the lexical list with or without it: without, a term, a document length and the average length
-- are exactly what they were before `loracle catalog refine` ran (the "before refining" rows of the
-- retrieval eval, measured in the same run as "after").
ALTER TABLE adapter_terms ADD COLUMN len_c real NOT NULL DEFAULT 0;  -- class-C positions of the adapter
ALTER TABLE lexical_stats ADD COLUMN total_len_c double precision NOT NULL DEFAULT 0;

CREATE FUNCTION loracle_tsvector_len_c(tsvector) RETURNS double precision
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
    $$ SELECT count(*)::double precision FROM unnest($1) u, unnest(u.weights) w WHERE w = 'C' $$;

-- The two lengths are computed once per adapter (MATERIALIZED), not once per term as before: that
-- made indexing an adapter quadratic in its number of distinct words.
CREATE OR REPLACE FUNCTION loracle_index_terms(adapter bigint, vector tsvector) RETURNS void
    LANGUAGE sql AS $$
    WITH lens AS MATERIALIZED (SELECT loracle_tsvector_len(vector) AS doc_len, loracle_tsvector_len_c(vector) AS len_c)
    INSERT INTO adapter_terms (term, adapter_id, tf_a, tf_b, tf_c, tf_d, doc_len, len_c)
    SELECT u.lexeme, adapter,
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'A'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'B'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'C'),
           (SELECT count(*) FROM unnest(u.weights) w WHERE w = 'D'),
           lens.doc_len, lens.len_c
    FROM lens, unnest(vector) u
    $$;

CREATE OR REPLACE FUNCTION loracle_adapter_terms_sync() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM adapter_terms WHERE adapter_id = OLD.id;
        UPDATE lexical_stats SET docs = docs - 1, total_len = total_len - loracle_tsvector_len(OLD.search_text),
                                 total_len_c = total_len_c - loracle_tsvector_len_c(OLD.search_text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM loracle_index_terms(NEW.id, NEW.search_text);
        UPDATE lexical_stats SET docs = docs + 1, total_len = total_len + loracle_tsvector_len(NEW.search_text),
                                 total_len_c = total_len_c + loracle_tsvector_len_c(NEW.search_text);
    END IF;
    RETURN NULL;
END $$;

-- Adapters refined before this migration.
UPDATE adapter_terms t SET len_c = c.len_c
FROM (SELECT id, loracle_tsvector_len_c(search_text) AS len_c FROM adapters WHERE refined_description IS NOT NULL) c
WHERE t.adapter_id = c.id AND c.len_c > 0;
UPDATE lexical_stats SET total_len_c = (SELECT coalesce(sum(loracle_tsvector_len_c(search_text)), 0) FROM adapters);

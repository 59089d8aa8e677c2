-- The adapter catalog, its embeddings and lexical search.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- array_to_string is only STABLE; generated columns need an IMMUTABLE function.
CREATE FUNCTION loracle_join_words(text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT array_to_string($1, ' ') $$;

CREATE TABLE adapters (
    id                   bigserial PRIMARY KEY,
    source               text NOT NULL,
    external_id          text NOT NULL,
    version_id           text,
    name                 text NOT NULL,
    base_model           text,
    tags                 text[] NOT NULL DEFAULT '{}',
    trigger_words        text[] NOT NULL DEFAULT '{}',
    description          text NOT NULL DEFAULT '',
    refined_description  text,
    category             text,
    recommended_weight   real,
    weight_source        text,          -- card | examples | llm | default
    example_prompts      text[] NOT NULL DEFAULT '{}',
    file_name            text,
    file_sha256          text,
    file_size_kb         real,
    download_url         text,
    local_path           text,
    downloads            integer,
    favorites            integer,
    rating               real,
    rating_count         integer,
    blocklisted          boolean NOT NULL DEFAULT false,
    extra                jsonb NOT NULL DEFAULT '{}',
    content_hash         text NOT NULL,
    created_at           timestamptz,
    imported_at          timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    search_text          tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(name, '')), 'A') ||
        setweight(to_tsvector('english', loracle_join_words(trigger_words)), 'A') ||
        setweight(to_tsvector('english', loracle_join_words(tags)), 'B') ||
        setweight(to_tsvector('english', coalesce(refined_description, '')), 'C') ||
        setweight(to_tsvector('english', left(description, 2000)), 'D')
    ) STORED,
    UNIQUE (source, external_id)
);
CREATE INDEX adapters_search_text ON adapters USING gin (search_text);
CREATE INDEX adapters_name_trgm ON adapters USING gin (name gin_trgm_ops);
CREATE INDEX adapters_tags ON adapters USING gin (tags);
CREATE INDEX adapters_file_sha256 ON adapters (file_sha256);

-- One row per (adapter, embedding model, kind of text, position). Vectors of any dimension share the
-- column; each (model, kind) gets its own HNSW expression index with the dimension cast in
-- (created by db/embeddings.py when a model is first used), as pgvector's docs recommend.
CREATE TABLE adapter_embeddings (
    adapter_id  bigint NOT NULL REFERENCES adapters (id) ON DELETE CASCADE,
    model       text NOT NULL,
    kind        text NOT NULL,           -- head | full | prompt | refined ...
    position    smallint NOT NULL DEFAULT 0,
    text_hash   text NOT NULL,
    embedding   halfvec NOT NULL,
    PRIMARY KEY (adapter_id, model, kind, position)
);
CREATE INDEX adapter_embeddings_model_kind ON adapter_embeddings (model, kind);

-- Image bytes in the database, for cluster mode (LORACLE_IMAGE_STORE=postgres, `loracle serve --ray`): any API
-- replica serves any image. A run image's bytes are written in the same transaction as its `images` row, so
-- neither exists without the other; uploads (edit inputs) have no row and are never swept.
CREATE TABLE image_blobs (
    path        text PRIMARY KEY,                                  -- the name the file store would use
    kind        text NOT NULL CHECK (kind IN ('image', 'upload')),
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- the sweep and thread deletion ask which paths a row still names
CREATE INDEX images_path ON images (path);

-- The secret that signs image links, when images are in the database: a link one replica made must open on all.
CREATE TABLE link_secret (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret    text NOT NULL
);

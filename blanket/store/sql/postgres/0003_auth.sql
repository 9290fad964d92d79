-- Who submitted each task and who stopped it; which of its variables are secret; which token
-- registered each worker; API tokens (stored as hashes only) and web sessions
ALTER TABLE tasks ADD COLUMN submitted_by TEXT;
ALTER TABLE tasks ADD COLUMN stopped_by TEXT;
ALTER TABLE tasks ADD COLUMN secrets JSONB NOT NULL DEFAULT '[]';   -- JSON list of names
ALTER TABLE workers ADD COLUMN owner TEXT;

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,               -- public part of the token, random
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    types       JSONB NOT NULL DEFAULT '[]',     -- JSON list of globs, empty for any type
    tags        JSONB NOT NULL DEFAULT '[]',     -- JSON list of globs, empty for any tag
    hash        TEXT NOT NULL,                  -- sha256 of the secret part, hex
    created     DOUBLE PRECISION NOT NULL,
    expires     DOUBLE PRECISION,
    revoked     DOUBLE PRECISION,
    parent      TEXT                            -- a web session: the token it was opened with
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE parent IS NULL AND revoked IS NULL;
CREATE INDEX tokens_by_parent ON tokens (parent) WHERE parent IS NOT NULL;

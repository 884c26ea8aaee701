-- Every version of every accepted record. `content` is the RFC 8785 canonical JSON whose
-- SHA-256 is `content_hash`; it is stored exactly as hashed and never rewritten.
CREATE TABLE records (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id    TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    origin       TEXT    NOT NULL,
    record_type  TEXT    NOT NULL,
    natural_key  TEXT    NOT NULL,
    -- First 8 bytes of the natural-key and content hashes as integers: small index entries
    -- keep random-key inserts cheap. Lookups compare the full hashes.
    nk           BIGINT  NOT NULL,
    ch           BIGINT  NOT NULL,
    content_hash TEXT    NOT NULL,
    subject_uscc TEXT,
    clock_start  TEXT,
    deadline     TEXT,
    received_at  TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    UNIQUE (record_id, version),
    UNIQUE (nk, ch)
);
CREATE INDEX records_subject ON records (subject_uscc);

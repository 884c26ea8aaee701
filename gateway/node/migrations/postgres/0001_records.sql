-- Every version of every accepted record. `content` is the RFC 8785 canonical JSON whose
-- SHA-256 is `content_hash`; it is stored exactly as hashed and never rewritten.
CREATE TABLE records (
    seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    record_id    TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    origin       TEXT    NOT NULL,
    record_type  TEXT    NOT NULL,
    natural_key  TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    item_hash    TEXT    NOT NULL,
    subject_uscc TEXT,
    clock_start  TEXT,
    deadline     TEXT,
    received_at  TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    UNIQUE (record_id, version),
    UNIQUE (natural_key, content_hash)
);
CREATE INDEX records_subject ON records (subject_uscc, record_type, clock_start);

-- Who may call the department API (#23): one row per credential. An API key is kept only as
-- the SHA-256 of its secret (shown once, when issued); a client certificate as the SHA-256 of
-- its DER. Each names the principal the audit log records, its role, its unit (USCC) and
-- department category, the other units it may report for, and its grants.
CREATE TABLE credentials (
    credential_id TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    principal     TEXT NOT NULL,
    role          TEXT NOT NULL,
    unit_uscc     TEXT,
    category      TEXT,
    -- JSON arrays.
    report_for    TEXT NOT NULL,
    grants        TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    revoked_at    TEXT,
    last_used_at  TEXT
);

-- The audit log: append-only, each entry chained to the one before by `hash` = SHA-256 over
-- `prev_hash` and the entry's canonical JSON. `seq` is assigned by the writer (last + 1, not
-- a sequence), so a deleted entry leaves a gap that `credit-gateway audit verify` names.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    at         TEXT    NOT NULL,
    principal  TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    status     INTEGER NOT NULL,
    outcome    TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    detail     TEXT    NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);

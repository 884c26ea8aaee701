-- Facts routing and lifecycle handling need without parsing content: who may see a record, and
-- for a lifecycle event the record version it is about.
ALTER TABLE records ADD COLUMN disclosure TEXT;
ALTER TABLE records ADD COLUMN target_origin TEXT;
ALTER TABLE records ADD COLUMN target_record_id TEXT;
ALTER TABLE records ADD COLUMN target_version BIGINT;
CREATE INDEX records_target ON records (target_record_id) WHERE target_record_id IS NOT NULL;

-- The outbox. `records.seq` orders everything a node stores, in commit order, so each
-- destination's queue is the records after its cursor that its routing rules select: a record
-- is queued by the very commit that stores it, and the cursor moves in the transaction that
-- stores the destination's receipt. Every record with seq <= `position` has been delivered,
-- skipped by routing, or dead-lettered.
CREATE TABLE outbox_cursors (
    destination TEXT PRIMARY KEY,
    position    BIGINT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Records a destination refused for good, or that wait behind an earlier refused version of the
-- same record (order per subject is kept). `state`: dead, resend (asked for by an operator),
-- resent. `reason` is JSON: code, message_zh, message_en and the field errors.
CREATE TABLE dead_letters (
    destination TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    record_id   TEXT   NOT NULL,
    version     BIGINT NOT NULL,
    reason      TEXT   NOT NULL,
    attempts    BIGINT NOT NULL,
    dead_at     TEXT   NOT NULL,
    state       TEXT   NOT NULL,
    resent_at   TEXT,
    PRIMARY KEY (destination, seq)
);
CREATE INDEX dead_letters_record ON dead_letters (record_id);

-- What the local publication sink took, and when (its receipt).
CREATE TABLE publications (
    seq          BIGINT NOT NULL PRIMARY KEY,
    record_id    TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    published_at TEXT   NOT NULL,
    file         TEXT   NOT NULL
);
CREATE INDEX publications_record ON publications (record_id);

-- Each record's state as the lifecycle events held here left it; no row means `active`.
-- `corrected_by` is the correction (or upheld objection) whose replacement is the current content.
-- The latest decision wins, by (`decided_on`, event id), whatever order events arrive in, so
-- every node holding the record reaches the same state.
CREATE TABLE record_states (
    record_id           TEXT   PRIMARY KEY,
    state               TEXT   NOT NULL,
    sanctions_suspended BIGINT NOT NULL,
    corrected_by        TEXT,
    last_event          TEXT   NOT NULL,
    last_event_type     TEXT   NOT NULL,
    decided_on          TEXT   NOT NULL,
    updated_at          TEXT   NOT NULL
);

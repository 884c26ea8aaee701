-- Joint reward-and-punishment cases (联合奖惩, #24; ADR 0007): one per subject × measure ×
-- implementing department, whatever brings the list entry again (re-sent, relayed twice,
-- imported again). `subject_key` is the subject's USCC, or for a natural person the SHA-256 of
-- the normalised identity number: the number itself is never kept here.
CREATE TABLE joint_cases (
    case_id         TEXT PRIMARY KEY,
    subject_key     TEXT NOT NULL,
    subject_name    TEXT NOT NULL,
    measure_id      TEXT NOT NULL,
    catalogue       TEXT NOT NULL,
    department_uscc TEXT NOT NULL,
    entry_origin    TEXT NOT NULL,
    entry_record_id TEXT NOT NULL,
    list_type       TEXT NOT NULL,
    opened_at       TEXT NOT NULL,
    -- Working-day due dates (YYYY-MM-DD); NULL where the calendar of the year is not loaded.
    response_due    TEXT,
    feedback_due    TEXT,
    -- opened → accepted | not_applicable → executed; lifting → lifted.
    state           TEXT NOT NULL,
    UNIQUE (subject_key, measure_id, department_uscc)
);
CREATE INDEX joint_cases_department ON joint_cases (department_uscc, state);
CREATE INDEX joint_cases_entry ON joint_cases (entry_record_id);

-- How far the case opener has read `records` (by seq): advanced in the transaction that opens
-- the cases of the list entries up to it.
CREATE TABLE joint_cursor (
    id        INTEGER PRIMARY KEY,
    after_seq BIGINT  NOT NULL
);

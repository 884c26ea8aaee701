-- Joint cases across nodes (ADR 0008).

-- A child's queue holds lifecycle events and, since list entries go down by a measure's reach,
-- list entries too: the index that lets its sender skip every other row covers both.
DROP INDEX records_events;
CREATE INDEX records_down ON records (seq)
    WHERE target_record_id IS NOT NULL OR record_type = 'credit_list_entry';

-- A case opened from an entry that came from elsewhere reports each change of its state
-- upward (a `joint_case_report` record). `reported_state` is the state last reported, '' before
-- the first report; NULL for a case of an entry pushed here, which reports to no one. The
-- partial index holds exactly the cases with a change to report.
ALTER TABLE joint_cases ADD COLUMN reported_state TEXT;
CREATE INDEX joint_cases_unreported ON joint_cases (case_id)
    WHERE reported_state IS NOT NULL AND reported_state <> state;

-- The cases reported by the nodes below (from `joint_case_report` records, read after cursor
-- 2 of `joint_cursor`): the latest report of each case, for the federation's loop.
CREATE TABLE joint_case_reports (
    reporter          TEXT    NOT NULL,
    case_id           TEXT    NOT NULL,
    entry_origin      TEXT    NOT NULL,
    entry_record_id   TEXT    NOT NULL,
    measure_id        TEXT    NOT NULL,
    department_uscc   TEXT    NOT NULL,
    state             TEXT    NOT NULL,
    opened_on         TEXT    NOT NULL,
    response_due      TEXT,
    feedback_due      TEXT,
    responded_at      TEXT,
    not_applicable    INTEGER NOT NULL,
    fed_back_at       TEXT,
    lift_requested_at TEXT,
    lifted_at         TEXT,
    report_version        BIGINT  NOT NULL,
    PRIMARY KEY (reporter, case_id)
);

-- The state of each case last written to the cases' 前置库 (`[measures.frontdb]`), NULL before
-- the first: a case is written again when its state has changed since.
ALTER TABLE joint_cases ADD COLUMN exported_state TEXT;

-- The answers of joint cases (联合奖惩 响应 → 反馈 → 解除, #24; ADR 0007). A case moves
-- opened → accepted | not_applicable, accepted → executed, and any case with a measure that
-- may be in force (opened, accepted, executed) → lifting → lifted once the department
-- acknowledges.
--
-- The table is rebuilt (SQLite cannot drop a table constraint) so that one subject × measure ×
-- department has one case *while it stands* (opened, accepted, executed, not applicable): once
-- a case is lifting or lifted, a new listing of the subject opens a new case.
CREATE TABLE joint_cases_answered (
    case_id           TEXT PRIMARY KEY,
    subject_key       TEXT NOT NULL,
    subject_name      TEXT NOT NULL,
    measure_id        TEXT NOT NULL,
    catalogue         TEXT NOT NULL,
    department_uscc   TEXT NOT NULL,
    entry_origin      TEXT NOT NULL,
    entry_record_id   TEXT NOT NULL,
    list_type         TEXT NOT NULL,
    opened_at         TEXT NOT NULL,
    -- The day of opening in China (YYYY-MM-DD): the month the loop counts it in.
    opened_on         TEXT NOT NULL,
    response_due      TEXT,
    feedback_due      TEXT,
    -- The list entry's 有效期至: the case is lifted when it passes.
    valid_until       TEXT,
    state             TEXT NOT NULL,
    -- 响应: when, by which credential, and the reason of a not_applicable answer.
    responded_at      TEXT,
    responded_by      TEXT,
    reason            TEXT,
    -- 反馈: the date executed, the action taken (执行内容), its effect (成效), the document
    -- number, the SHA-256 of an attachment, and the point-of-decision check it follows from.
    executed_on       TEXT,
    action_taken      TEXT,
    effect            TEXT,
    document_no       TEXT,
    attachment_sha256 TEXT,
    check_id          TEXT,
    fed_back_at       TEXT,
    -- 解除: why (repaired, withdrawn, removed, expired), when asked, when acknowledged.
    lift_reason       TEXT,
    lift_requested_at TEXT,
    lifted_at         TEXT
);
INSERT INTO joint_cases_answered (case_id, subject_key, subject_name, measure_id, catalogue, department_uscc,
    entry_origin, entry_record_id, list_type, opened_at, opened_on, response_due, feedback_due, state)
SELECT case_id, subject_key, subject_name, measure_id, catalogue, department_uscc, entry_origin, entry_record_id,
    list_type, opened_at, substr(opened_at, 1, 10), response_due, feedback_due, state
FROM joint_cases;
DROP TABLE joint_cases;
ALTER TABLE joint_cases_answered RENAME TO joint_cases;
CREATE UNIQUE INDEX joint_cases_standing ON joint_cases (subject_key, measure_id, department_uscc)
    WHERE state IN ('opened', 'accepted', 'executed', 'not_applicable');
-- The point-of-decision check: one subject at one department, its cases in force.
CREATE INDEX joint_cases_subject ON joint_cases (subject_key, department_uscc, state);
CREATE INDEX joint_cases_department ON joint_cases (department_uscc, state);
CREATE INDEX joint_cases_entry ON joint_cases (entry_record_id);
-- Overdue responses and feedback.
CREATE INDEX joint_cases_state_due ON joint_cases (state, response_due);

-- The implementing departments (unit × category) the opener has planned cases for. A
-- department registered later is caught up once: the entries already read that still stand
-- open its cases.
CREATE TABLE joint_departments (
    department_uscc TEXT NOT NULL,
    category        TEXT NOT NULL,
    PRIMARY KEY (department_uscc, category)
);

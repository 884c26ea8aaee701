-- The answers of joint cases (联合奖惩 响应 → 反馈 → 解除, #24; ADR 0007). A case moves
-- opened → accepted | not_applicable, accepted → executed, and any case with a measure that
-- may be in force (opened, accepted, executed) → lifting → lifted once the department
-- acknowledges. (The SQLite migration rebuilds the table to the same shape.)
--
-- One subject × measure × department has one case *while it stands* (opened, accepted,
-- executed, not applicable): once a case is lifting or lifted, a new listing of the subject
-- opens a new case.
ALTER TABLE joint_cases DROP CONSTRAINT joint_cases_subject_key_measure_id_department_uscc_key;
CREATE UNIQUE INDEX joint_cases_standing ON joint_cases (subject_key, measure_id, department_uscc)
    WHERE state IN ('opened', 'accepted', 'executed', 'not_applicable');
-- The point-of-decision check: one subject at one department, its cases in force.
CREATE INDEX joint_cases_subject ON joint_cases (subject_key, department_uscc, state);
-- The day of opening in China (YYYY-MM-DD): the month the loop counts it in.
ALTER TABLE joint_cases ADD COLUMN opened_on TEXT;
UPDATE joint_cases SET opened_on = substr(opened_at, 1, 10);
ALTER TABLE joint_cases ALTER COLUMN opened_on SET NOT NULL;
-- The list entry's 有效期至: the case is lifted when it passes.
ALTER TABLE joint_cases ADD COLUMN valid_until TEXT;
-- 响应: when, by which credential, and the reason of a not_applicable answer.
ALTER TABLE joint_cases ADD COLUMN responded_at TEXT;
ALTER TABLE joint_cases ADD COLUMN responded_by TEXT;
ALTER TABLE joint_cases ADD COLUMN reason TEXT;
-- 反馈: the date executed, the action taken (执行内容), its effect (成效), the document
-- number, the SHA-256 of an attachment, and the point-of-decision check it follows from.
ALTER TABLE joint_cases ADD COLUMN executed_on TEXT;
ALTER TABLE joint_cases ADD COLUMN action_taken TEXT;
ALTER TABLE joint_cases ADD COLUMN effect TEXT;
ALTER TABLE joint_cases ADD COLUMN document_no TEXT;
ALTER TABLE joint_cases ADD COLUMN attachment_sha256 TEXT;
ALTER TABLE joint_cases ADD COLUMN check_id TEXT;
ALTER TABLE joint_cases ADD COLUMN fed_back_at TEXT;
-- 解除: why (repaired, withdrawn, removed, expired), when asked, when acknowledged.
ALTER TABLE joint_cases ADD COLUMN lift_reason TEXT;
ALTER TABLE joint_cases ADD COLUMN lift_requested_at TEXT;
ALTER TABLE joint_cases ADD COLUMN lifted_at TEXT;
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

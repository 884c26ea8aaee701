-- The department answerable for a record (数据来源单位), for SLA views filtered by department.
ALTER TABLE records ADD COLUMN department_uscc TEXT;
UPDATE records SET department_uscc = UPPER(COALESCE(content::json->>'source_unit_uscc',
    content::json->>'department_uscc', content::json->>'listing_authority_uscc'));

-- Records of one type in seq order (monthly reports for the reporting view, type filters of
-- the records API): without it those read the whole table.
CREATE INDEX records_type_seq ON records (record_type, seq);

-- Which destination acknowledged a sent record, and when: the SLA of a hop (a record is
-- delivered to the parent when its receipt comes back, however long the retries took).
ALTER TABLE sent_items ADD COLUMN destination TEXT;
ALTER TABLE sent_items ADD COLUMN acknowledged_at TEXT;
-- Existing rows: the receiver of their envelope; as acknowledgement time, the envelope's
-- creation (the receipt's own time is not kept apart), except for items the receiver refused.
UPDATE sent_items SET destination = (SELECT receiver FROM envelopes WHERE digest = sent_items.envelope_digest);
UPDATE sent_items SET acknowledged_at = (SELECT created_at FROM envelopes WHERE digest = sent_items.envelope_digest)
    WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.destination = sent_items.destination
        AND d.record_id = sent_items.record_id AND d.version = sent_items.version);

-- Data quality per department and month (所属期 = the month a submission arrived, Beijing
-- time), counted as submissions arrive and as the publication sink publishes: the quality page
-- reads a month's few rows, never the records.
CREATE TABLE quality_monthly (
    department_uscc   TEXT   NOT NULL,
    period            TEXT   NOT NULL,
    department_name   TEXT   NOT NULL,
    submitted         BIGINT NOT NULL DEFAULT 0,
    accepted          BIGINT NOT NULL DEFAULT 0,
    fields_filled     BIGINT NOT NULL DEFAULT 0,
    fields_expected   BIGINT NOT NULL DEFAULT 0,
    -- Submitted after their publicity deadline had passed (迟报).
    reported_late     BIGINT NOT NULL DEFAULT 0,
    published         BIGINT NOT NULL DEFAULT 0,
    published_on_time BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (department_uscc, period)
);

-- Why submissions were rejected: rule code counts per department and month.
CREATE TABLE quality_reasons (
    department_uscc TEXT   NOT NULL,
    period          TEXT   NOT NULL,
    rule            TEXT   NOT NULL,
    count           BIGINT NOT NULL,
    PRIMARY KEY (department_uscc, period, rule)
);

-- Submissions per day (Beijing), for the accepted-vs-rejected trend.
CREATE TABLE quality_daily (
    day      TEXT   PRIMARY KEY,
    accepted BIGINT NOT NULL,
    rejected BIGINT NOT NULL
);

-- Alerts the webhook has delivered, so that each fires once (also across restarts).
CREATE TABLE alerts_sent (
    alert_key TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    sent_at   TEXT NOT NULL
);

-- Publication SLAs, kept incrementally (design §8): one row per record with a deadline and per
-- destination that takes it, written by a catch-up over `records.seq` after the destination's
-- cursor (`sla_cursors`), and stamped with `delivered_at` in the transaction that settles the
-- delivery. Views and alerts read a deadline range of this index, never the records.
CREATE TABLE sla_tracking (
    destination     TEXT NOT NULL,
    record_id       TEXT NOT NULL,
    deadline        TEXT NOT NULL,
    record_type     TEXT NOT NULL,
    origin          TEXT NOT NULL,
    department_uscc TEXT,
    delivered_at    TEXT,
    PRIMARY KEY (destination, record_id)
);
CREATE INDEX sla_tracking_window ON sla_tracking (destination, deadline, delivered_at, department_uscc, record_type);
CREATE TABLE sla_cursors (
    destination TEXT PRIMARY KEY,
    position    BIGINT NOT NULL
);

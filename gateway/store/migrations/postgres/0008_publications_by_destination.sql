-- A record published by more than one local destination (the publication sink, each delivering
-- platform adapter) has one publication row per destination, for the trail and the SLA.
CREATE TABLE publications_by_destination (
    destination  TEXT   NOT NULL,
    seq          BIGINT NOT NULL,
    record_id    TEXT   NOT NULL,
    version      BIGINT NOT NULL,
    published_at TEXT   NOT NULL,
    file         TEXT   NOT NULL,
    PRIMARY KEY (destination, seq)
);
INSERT INTO publications_by_destination (destination, seq, record_id, version, published_at, file)
    SELECT 'publication', seq, record_id, version, published_at, file FROM publications;
DROP TABLE publications;
ALTER TABLE publications_by_destination RENAME TO publications;
CREATE INDEX publications_record ON publications (record_id);

-- The SLA view reads records by deadline, up to a horizon a few working days ahead.
CREATE INDEX records_deadline ON records (deadline) WHERE deadline IS NOT NULL;

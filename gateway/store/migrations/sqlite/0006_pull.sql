-- Envelopes waiting for a child that collects them (pull mode, interchange-v1 §9 `GET events`),
-- oldest first by `cursor`. The child answers each with its signed receipt (`receipt`), which the
-- sender verifies like a pushed envelope's; the row is deleted when the sender stops waiting (answered or
-- timed out): a new attempt parks a new envelope.
CREATE TABLE pull_queue (
    cursor    INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver  TEXT NOT NULL,
    digest    TEXT NOT NULL UNIQUE,
    body      TEXT NOT NULL,
    parked_at TEXT NOT NULL,
    receipt   TEXT
);
CREATE INDEX pull_queue_receiver ON pull_queue (receiver, cursor);

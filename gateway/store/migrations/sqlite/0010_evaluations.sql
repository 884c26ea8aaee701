-- Credit evaluations for partner pulls (信用评价结果互认). A subject's evaluation results are
-- found through records_subject; the current one per scheme is chosen when answering.

-- Answers from partner cities, one row per partner and subject: served while fresh, and,
-- marked stale with their age, when the partner cannot be reached.
CREATE TABLE evaluation_cache (
    partner      TEXT NOT NULL,
    subject_uscc TEXT NOT NULL,
    answer_id    TEXT NOT NULL,
    fetched_at   TEXT NOT NULL,
    -- The subject's part of the signed answer (JSON); the whole answer is in evaluation_pulls.
    entry        TEXT NOT NULL,
    PRIMARY KEY (partner, subject_uscc)
);

-- The audit log of pulls, on both sides: `in` = a partner asked this node (written before the
-- answer is sent), `out` = this node's desk asked a partner (live, from the cache, or failed).
CREATE TABLE evaluation_pulls (
    pull_id       TEXT   PRIMARY KEY,
    direction     TEXT   NOT NULL,
    at            TEXT   NOT NULL,
    asker         TEXT   NOT NULL,
    answerer      TEXT   NOT NULL,
    officer       TEXT,
    subjects      TEXT   NOT NULL,
    subject_count BIGINT NOT NULL,
    outcome       TEXT   NOT NULL,
    reason        TEXT,
    answer_id     TEXT,
    -- The signed answer (JWS JSON) as sent or received.
    answer        TEXT
);
CREATE INDEX evaluation_pulls_at ON evaluation_pulls (at);
CREATE INDEX evaluation_pulls_answer ON evaluation_pulls (answer_id) WHERE answer_id IS NOT NULL;

-- Relayed records' origin proofs (interchange-v1 §5), kept beside the records instead of in
-- them: each origin envelope once, and per record version only its proof in that envelope's
-- tree. In the row (`records.origin_proof`, the JSON of both) every relayed record carried its
-- own copy of the envelope and came to about 2.8 KB, so SQLite stored one such row per page.
-- Rows stored before this migration keep their `records.origin_proof`; readers take either.
CREATE TABLE origin_envelopes (
    digest   TEXT PRIMARY KEY,
    envelope TEXT NOT NULL
);
CREATE TABLE origin_proofs (
    record_id       TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    origin_envelope TEXT   NOT NULL,
    proof           TEXT   NOT NULL,
    PRIMARY KEY (record_id, version)
);

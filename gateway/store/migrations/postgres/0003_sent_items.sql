-- Which record versions each sent envelope carried, and at which leaf: evidence export finds a
-- record's onward hops here, and a peer may ask for a record's evidence only if we sent it.
CREATE TABLE sent_items (
    envelope_digest TEXT   NOT NULL,
    leaf_index      BIGINT NOT NULL,
    record_id       TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    PRIMARY KEY (envelope_digest, leaf_index)
);
CREATE INDEX sent_items_record ON sent_items (record_id, version);

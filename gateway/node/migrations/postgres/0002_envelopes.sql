-- Envelopes this node received ('in') or sent ('out'), each with the receipt that answers it:
-- ours for 'in' (stored in the same transaction as the items), the peer's verified one for 'out'.
CREATE TABLE envelopes (
    digest      TEXT PRIMARY KEY,
    envelope_id TEXT NOT NULL,
    direction   TEXT NOT NULL,
    sender      TEXT NOT NULL,
    receiver    TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    created_at  TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    -- The item hashes in envelope order (64 hex characters each): every item's Merkle proof
    -- can be rebuilt from them, so proofs are not stored one by one.
    item_hashes TEXT NOT NULL,
    receipt     TEXT,
    UNIQUE (sender, envelope_id)
);
-- Where each record version sat in each envelope that carried it: the evidence trail. For a
-- relayed item, the origin's envelope and proof travel on with it (`origin_proof`, JSON).
CREATE TABLE item_proofs (
    record_id       TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    envelope_digest TEXT   NOT NULL,
    leaf_index      BIGINT NOT NULL,
    origin_proof    TEXT,
    PRIMARY KEY (record_id, version, envelope_digest)
);

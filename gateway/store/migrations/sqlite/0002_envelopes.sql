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
-- Where a record version arrived from another node: the envelope and its place in it (the
-- proof is rebuilt from the envelope's item hashes) and, for a relayed item, the origin's own
-- envelope and proof (JSON). NULL for records pushed by departments at this node.
ALTER TABLE records ADD COLUMN envelope_digest TEXT;
ALTER TABLE records ADD COLUMN leaf_index BIGINT;
ALTER TABLE records ADD COLUMN origin_proof TEXT;

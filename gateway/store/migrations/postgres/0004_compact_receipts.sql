-- Our own receipts for received envelopes, stored compactly: the signature, the time, and each
-- item's outcome as one letter. The identical JWS is rebuilt from these and the envelope's item
-- hashes (in full a receipt is about 150 KB per 1,000 items). `receipt` then stays NULL; receipts
-- with rejected items, and the peers' receipts of sent envelopes, are kept in full.
ALTER TABLE envelopes ADD COLUMN receipt_compact TEXT;

-- `sent_items` is keyed by record first, as on SQLite (migration 0019 there): every reader looks
-- it up by record id, so the key serves them and the separate record index goes. The sent
-- envelope and leaf make the key unique (a settlement writes each leaf once).
ALTER TABLE sent_items DROP CONSTRAINT sent_items_pkey;
ALTER TABLE sent_items ADD PRIMARY KEY (record_id, version, envelope_digest, leaf_index);
DROP INDEX sent_items_record;

-- Push groups on PostgreSQL commit side by side (src/horizon.rs). Each decides a record's
-- version from a lookup that cannot see the other group's uncommitted rows, so two groups
-- given the same new natural key would each store it as version 1 of a record of its own.
-- On the push path a natural key names one record, so this key makes the second group fail
-- and commit again alone, when it sees the first one's row. Rows that came in envelopes keep
-- their senders' record ids and versions and are left out.
-- Compared bytewise (COLLATE "C"): the keys are hex, and a locale's collation would make every
-- insert's comparisons dearer for no gain.
CREATE UNIQUE INDEX records_pushed_natural_key ON records (natural_key COLLATE "C", version) WHERE envelope_digest IS NULL;

-- A child's queue holds only lifecycle events. Without this index its sender read every stored
-- row after its cursor to find the few events among them (one full read of each record per
-- child link); with it the scan touches the events alone.
CREATE INDEX records_events ON records (seq) WHERE target_record_id IS NOT NULL;

-- The SLA views read `sla_tracking` since migration 0009; nothing reads records by deadline any
-- more, and the index cost every stored record a write at a scattered place.
DROP INDEX records_deadline;

-- The cases' 前置库 asks, every round and for each of its departments, for the cases whose state
-- changed since they were written there. Without this index that read went through every case
-- the department ever had; with it, only through those waiting to be written (and the cases of
-- departments that use no 前置库, which stay unwritten but are never asked for).
CREATE INDEX joint_cases_unexported ON joint_cases (department_uscc, case_id)
    WHERE exported_state IS NULL OR exported_state <> state;

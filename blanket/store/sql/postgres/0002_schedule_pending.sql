-- A run of an overlap = "queue" schedule that waits for the previous run to end (its fire time).
ALTER TABLE schedule_state ADD COLUMN pending_fire DOUBLE PRECISION;

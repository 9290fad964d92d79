-- The dashboard counts the tasks that ended lately, by type and state and by minute.
CREATE INDEX tasks_by_finished ON tasks (finished) WHERE finished IS NOT NULL;

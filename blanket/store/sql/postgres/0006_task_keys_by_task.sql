-- The same index as SQLite's 0006 (PostgreSQL has had it since 0001): the numbers stay aligned.
CREATE INDEX IF NOT EXISTS task_keys_by_task ON task_keys (task_id);

-- Removing a task removes its dedupe keys: by task id (retention removes them 100 tasks at a
-- time; without this index each removal read every key under the store's lock).
CREATE INDEX IF NOT EXISTS task_keys_by_task ON task_keys (task_id);

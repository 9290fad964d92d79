-- Tasks that wait for other tasks (`after`): WAITING until every one has ended, then QUEUED,
-- or SKIPPED when one did not succeed (unless after_policy is 'always'). `waiting_for` counts
-- the ones not ended yet; task_deps finds, for a task that ends, the tasks waiting for it.
ALTER TABLE tasks ADD COLUMN after_ids TEXT NOT NULL DEFAULT '[]';   -- JSON list of ids
ALTER TABLE tasks ADD COLUMN after_policy TEXT;                       -- NULL (success) or 'always'
ALTER TABLE tasks ADD COLUMN waiting_for INTEGER NOT NULL DEFAULT 0;

CREATE TABLE task_deps (
    after_id INTEGER NOT NULL,      -- the task waited for
    task_id  INTEGER NOT NULL,      -- the task that waits
    PRIMARY KEY (after_id, task_id)
) WITHOUT ROWID;
CREATE INDEX task_deps_by_task ON task_deps (task_id);

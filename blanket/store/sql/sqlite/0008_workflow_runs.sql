-- Workflow runs (conf.d/workflows/NAME.toml): a run keeps the file it started from, its
-- variables and its state; run_tasks ties each task a step made to the run, the step, the
-- item of a fanned step and the round (1, then one more for each rerun of failed steps).
CREATE TABLE workflow_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow     TEXT NOT NULL,
    version      TEXT NOT NULL,          -- the hash of the file's bytes
    definition   TEXT NOT NULL,          -- the file itself, as the run started it
    environment  TEXT NOT NULL,          -- JSON: the run's variables
    state        TEXT NOT NULL,          -- running | succeeded | failed | stopped
    round        INTEGER NOT NULL DEFAULT 1,
    added        REAL NOT NULL,
    finished     REAL,
    reason       TEXT,                   -- why it failed or stopped
    submitted_by TEXT,
    schedule     TEXT,
    dedupe_key   TEXT UNIQUE              -- a schedule's fire or an inbox file: started once
);
CREATE INDEX workflow_runs_running ON workflow_runs (id) WHERE state = 'running';
CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow, id);

CREATE TABLE run_tasks (
    run_id  INTEGER NOT NULL,
    step    TEXT NOT NULL,
    item    INTEGER NOT NULL,            -- 0, or the item's index in a fanned step
    round   INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, step, item, round)
) WITHOUT ROWID;
CREATE INDEX run_tasks_by_task ON run_tasks (task_id);

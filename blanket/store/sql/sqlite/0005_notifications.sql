-- Notifications of tasks' ends ([[notify]] blocks): one row per (task, target), made in the
-- transaction that ends the task, sent by the server's delivery loop, retried with backoff.
CREATE TABLE deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,  -- sent as the Blanket-Delivery header
    task_id     INTEGER NOT NULL,                   -- no foreign key: it outlives a removal
    task_type   TEXT NOT NULL,
    event       TEXT NOT NULL,                      -- failed | timedout | lost | success | stopped
    target_key  TEXT NOT NULL,                      -- the target's identity (config/notify.py)
    target      TEXT NOT NULL,                      -- JSON: where and how (never a secret value)
    state       TEXT NOT NULL DEFAULT 'pending',    -- pending | delivered | failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    created     REAL NOT NULL,                      -- when the task ended
    next_at     REAL NOT NULL,                      -- due then (while sent: the lease's end)
    finished    REAL,                               -- delivered or given up
    result      TEXT,                               -- the last attempt's answer or error, short
    UNIQUE (task_id, target_key)
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_task ON deliveries (task_id);

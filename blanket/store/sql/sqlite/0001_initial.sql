-- blanket schema, version 1 (SQLite)

CREATE TABLE versions (
    hash        TEXT PRIMARY KEY,
    type_name   TEXT NOT NULL,
    created     REAL NOT NULL
);

CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    type             TEXT NOT NULL,
    state            TEXT NOT NULL,
    environment      TEXT NOT NULL,           -- JSON object
    tags             TEXT NOT NULL,           -- sorted tags joined by ",": one queue lane per (type, tags)
    score            REAL NOT NULL,
    added            REAL NOT NULL,
    not_before       REAL,
    version          TEXT,
    claimed          REAL,
    started          REAL,
    finished         REAL,
    heartbeat        REAL,
    worker           TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    token            TEXT,
    pid              INTEGER,
    exit_code        INTEGER,
    progress         INTEGER,
    progress_message TEXT,
    directory        TEXT,
    error            TEXT,
    schedule         TEXT,
    retries          INTEGER NOT NULL DEFAULT 0,
    retry_delay      REAL NOT NULL DEFAULT 0,
    timeout          REAL,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    priority         INTEGER NOT NULL DEFAULT 0,
    inputs           TEXT NOT NULL DEFAULT '[]',
    attempts         TEXT NOT NULL DEFAULT '[]'
);

-- The claim walks lanes (type, tags) of queued tasks and takes each lane's head by score.
CREATE INDEX tasks_queue ON tasks (type, tags, score) WHERE state = 'QUEUED';
CREATE INDEX tasks_waiting ON tasks (not_before) WHERE state = 'QUEUED' AND not_before IS NOT NULL;
CREATE INDEX tasks_active ON tasks (state, type) WHERE state IN ('CLAIMED', 'RUNNING');
CREATE INDEX tasks_by_state ON tasks (state, id);
CREATE INDEX tasks_by_type ON tasks (type, id);
CREATE INDEX tasks_by_schedule ON tasks (schedule, id) WHERE schedule IS NOT NULL;
CREATE INDEX tasks_by_type_finished ON tasks (type, finished) WHERE state = 'SUCCESS';

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    tags        TEXT NOT NULL,                -- JSON list
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    registered  REAL NOT NULL,
    heartbeat   REAL NOT NULL,
    task        INTEGER,
    stop_mode   TEXT
);

CREATE TABLE schedule_state (
    name        TEXT PRIMARY KEY,
    next_fire   REAL,
    last_fire   REAL,
    last_task   INTEGER,
    paused      INTEGER NOT NULL DEFAULT 0
);

-- Dedupe keys (inbox files, client idempotency keys), written in the same transaction as the task.
CREATE TABLE task_keys (
    key         TEXT PRIMARY KEY,
    task_id     INTEGER NOT NULL
);

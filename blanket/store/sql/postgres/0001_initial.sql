-- blanket schema, version 1 (PostgreSQL)

CREATE TABLE versions (
    hash        TEXT PRIMARY KEY,
    type_name   TEXT NOT NULL,
    created     DOUBLE PRECISION NOT NULL
);

CREATE TABLE tasks (
    id               BIGSERIAL PRIMARY KEY,
    type             TEXT NOT NULL,
    state            TEXT NOT NULL,
    environment      JSONB NOT NULL,
    tags             TEXT NOT NULL,           -- sorted tags joined by ",", as in SQLite
    score            DOUBLE PRECISION NOT NULL,
    added            DOUBLE PRECISION NOT NULL,
    not_before       DOUBLE PRECISION,
    version          TEXT,
    claimed          DOUBLE PRECISION,
    started          DOUBLE PRECISION,
    finished         DOUBLE PRECISION,
    heartbeat        DOUBLE PRECISION,
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
    retry_delay      DOUBLE PRECISION NOT NULL DEFAULT 0,
    timeout          DOUBLE PRECISION,
    stop_requested   BOOLEAN NOT NULL DEFAULT FALSE,
    priority         INTEGER NOT NULL DEFAULT 0,
    inputs           JSONB NOT NULL DEFAULT '[]',
    attempts         JSONB NOT NULL DEFAULT '[]'
);

-- The claim walks lanes (type, tags) of queued tasks and takes each lane's head by score.
CREATE INDEX tasks_queue ON tasks (type, tags, score, id) WHERE state = 'QUEUED';
CREATE INDEX tasks_waiting ON tasks (not_before) WHERE state = 'QUEUED' AND not_before IS NOT NULL;
CREATE INDEX tasks_active ON tasks (type) WHERE state IN ('CLAIMED', 'RUNNING');
CREATE INDEX tasks_by_state ON tasks (state, id);
CREATE INDEX tasks_by_type ON tasks (type, id);
CREATE INDEX tasks_by_schedule ON tasks (schedule, id) WHERE schedule IS NOT NULL;
CREATE INDEX tasks_by_type_finished ON tasks (type, finished) WHERE state = 'SUCCESS';

CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    tags        JSONB NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    registered  DOUBLE PRECISION NOT NULL,
    heartbeat   DOUBLE PRECISION NOT NULL,
    task        BIGINT,
    stop_mode   TEXT
);

CREATE TABLE schedule_state (
    name        TEXT PRIMARY KEY,
    next_fire   DOUBLE PRECISION,
    last_fire   DOUBLE PRECISION,
    last_task   BIGINT,
    paused      BOOLEAN NOT NULL DEFAULT FALSE
);

-- Dedupe keys (inbox files, client idempotency keys), written in the same transaction as the task.
CREATE TABLE task_keys (
    key         TEXT PRIMARY KEY,
    task_id     BIGINT NOT NULL
);
CREATE INDEX task_keys_by_task ON task_keys (task_id);

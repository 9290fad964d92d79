-- Every query the SQLite store runs, by name. Read this file to see the queue's whole behaviour.

-- name: insert_task
-- In its final state: QUEUED, or as the tasks it waits for stand (store/dependencies.py).
INSERT INTO tasks (type, state, environment, tags, score, added, not_before, schedule,
                   retries, retry_delay, timeout, priority, inputs,
                   submitted_by, secrets, after_ids, after_policy, waiting_for, finished, error)
VALUES (:type, :state, :environment, :tags, :score, :added, :not_before, :schedule,
        :retries, :retry_delay, :timeout, :priority, :inputs, :submitted_by, :secrets,
        :after, :policy, :waiting_for, :finished, :error)
RETURNING *;

-- name: insert_key
INSERT INTO task_keys (key, task_id, fingerprint) VALUES (?, ?, ?);

-- name: task_for_key
SELECT task_id FROM task_keys WHERE key = ?;

-- name: key_entry
SELECT task_id, fingerprint FROM task_keys WHERE key = ?;

-- name: get_task
SELECT * FROM tasks WHERE id = ?;

-- name: delete_task
DELETE FROM tasks WHERE id = ?;

-- name: delete_keys
DELETE FROM task_keys WHERE task_id = ?;

-- name: next_lane
-- Loose index scan: the next distinct (type, tags) lane after the given one. Two seeks, not
-- one row-value range: SQLite seeks `(type, tags) > (?, ?)` on type alone and then walks
-- every task of the current type (milliseconds with a large backlog).
SELECT type, tags FROM (
    SELECT * FROM (SELECT type, tags FROM tasks INDEXED BY tasks_queue
                   WHERE state = 'QUEUED' AND type = ?1 AND tags > ?2 ORDER BY tags LIMIT 1)
    UNION ALL
    SELECT * FROM (SELECT type, tags FROM tasks INDEXED BY tasks_queue
                   WHERE state = 'QUEUED' AND type > ?1 ORDER BY type, tags LIMIT 1)
) ORDER BY type, tags LIMIT 1;

-- name: lane_head
SELECT id, score FROM tasks INDEXED BY tasks_queue
WHERE state = 'QUEUED' AND type = ? AND tags = ? AND (not_before IS NULL OR not_before <= ?)
ORDER BY score, id LIMIT 1;

-- name: running_per_type
SELECT type, count(*) FROM tasks WHERE state IN ('CLAIMED', 'RUNNING') GROUP BY type;

-- name: claim
UPDATE tasks SET state = 'CLAIMED', worker = :worker, token = :token, claimed = :now,
       version = :version, claim_key = :key,
       heartbeat = :now, attempt = attempt + 1, started = NULL, finished = NULL, pid = NULL,
       exit_code = NULL, progress = NULL, progress_message = NULL, error = NULL,
       stop_requested = 0
WHERE id = :id AND state = 'QUEUED'
RETURNING *;

-- name: claimed_by_key
-- The task a claim with this key already took for this worker, if it is still claimed (the
-- worker asks again because the answer never reached it).
SELECT * FROM tasks
WHERE state = 'CLAIMED' AND worker = :worker AND claim_key = :key
ORDER BY id LIMIT 1;

-- name: idle_worker_tags
SELECT tags FROM workers WHERE state = 'idle' AND id != ? AND heartbeat > ?;

-- name: release
UPDATE tasks SET state = 'QUEUED', worker = NULL, token = NULL, claimed = NULL,
       heartbeat = NULL, attempt = attempt - 1
WHERE id = ? AND token = ? AND state = 'CLAIMED';

-- name: worker_busy
UPDATE workers SET heartbeat = :now, task = :id,
       state = CASE WHEN state IN ('idle', 'gone') THEN 'busy' ELSE state END
WHERE id = :worker;

-- name: bind_version
UPDATE tasks SET version = ? WHERE id = ? AND token = ? AND state IN ('CLAIMED', 'RUNNING');

-- name: mark_started
UPDATE tasks SET state = 'RUNNING', started = :now, heartbeat = :now, pid = :pid,
       directory = COALESCE(:directory, directory)
WHERE id = :id AND token = :token AND state IN ('CLAIMED', 'RUNNING');

-- name: heartbeat
UPDATE tasks SET heartbeat = ? WHERE id = ? AND token = ? AND state IN ('CLAIMED', 'RUNNING');

-- name: worker_heartbeat
UPDATE workers SET heartbeat = ? WHERE id = ?;

-- name: progress_by_token
UPDATE tasks SET progress = ?, progress_message = ?
WHERE id = ? AND token = ? AND state IN ('CLAIMED', 'RUNNING');

-- name: progress_any
UPDATE tasks SET progress = ?, progress_message = ? WHERE id = ? AND state IN ('CLAIMED', 'RUNNING');

-- name: finish
UPDATE tasks SET state = :state, exit_code = :exit_code, error = :error, finished = :finished,
       token = NULL, attempts = :attempts, started = COALESCE(started, :started),
       pid = COALESCE(pid, :pid), directory = COALESCE(:directory, directory)
WHERE id = :id AND token = :token AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: requeue
UPDATE tasks SET state = 'QUEUED', exit_code = :exit_code, error = :error, finished = NULL,
       token = NULL, worker = NULL, attempts = :attempts, not_before = :not_before,
       attempt = attempt - :refund,
       score = :score, pid = NULL, directory = COALESCE(:directory, directory)
WHERE id = :id AND token = :token AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: request_stop
UPDATE tasks SET stop_requested = 1, stopped_by = ?
WHERE id = ? AND state IN ('CLAIMED', 'RUNNING');

-- name: stop_queued
UPDATE tasks SET state = 'STOPPED', finished = ?, error = 'stopped before it started',
    stopped_by = ?
WHERE id = ? AND state IN ('QUEUED', 'WAITING');

-- name: stale_tasks
SELECT * FROM tasks WHERE state IN ('CLAIMED', 'RUNNING') AND heartbeat < ?;

-- name: next_not_before
-- By the partial index of held-back tasks: without INDEXED BY, SQLite walks every queued task.
SELECT min(not_before) FROM tasks INDEXED BY tasks_waiting
WHERE state = 'QUEUED' AND not_before IS NOT NULL AND not_before > ?;

-- name: recent_durations
SELECT finished - started FROM tasks INDEXED BY tasks_by_type_finished
WHERE type = ? AND state = 'SUCCESS' AND started IS NOT NULL
ORDER BY finished DESC LIMIT ?;

-- name: record_version
INSERT OR IGNORE INTO versions (hash, type_name, created) VALUES (?, ?, ?);

-- name: save_worker
INSERT INTO workers (id, tags, host, pid, state, registered, heartbeat, task, stop_mode,
                     owner)
VALUES (:id, :tags, :host, :pid, :state, :registered, :heartbeat, :task, :stop_mode, :owner)
ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, host = excluded.host, pid = excluded.pid,
    state = excluded.state, registered = excluded.registered, heartbeat = excluded.heartbeat,
    task = excluded.task, stop_mode = excluded.stop_mode, owner = excluded.owner;

-- name: get_worker
SELECT * FROM workers WHERE id = ?;

-- name: attempt_worker
SELECT workers.* FROM tasks JOIN workers ON workers.id = tasks.worker
WHERE tasks.id = ? AND tasks.token = ?;

-- name: list_workers
SELECT * FROM workers ORDER BY id;

-- name: delete_worker
DELETE FROM workers WHERE id = ?;

-- name: touch_worker
UPDATE workers SET heartbeat = :now, task = :task,
       state = CASE WHEN state IN ('idle', 'busy', 'gone')
                    THEN CASE WHEN :task IS NULL THEN 'idle' ELSE 'busy' END
                    ELSE state END
WHERE id = :id;

-- name: set_worker_state
UPDATE workers SET state = CASE WHEN :state = 'idle' AND task IS NOT NULL THEN 'busy'
                                ELSE :state END
WHERE id = :id AND state != 'stopping';

-- name: stop_worker
UPDATE workers SET state = 'stopping', stop_mode = :mode WHERE id = :id;

-- name: get_schedule_state
SELECT * FROM schedule_state WHERE name = ?;

-- name: planned_schedules
SELECT name FROM schedule_state WHERE next_fire IS NOT NULL OR pending_fire IS NOT NULL
ORDER BY name;

-- name: save_schedule_state
INSERT INTO schedule_state (name, next_fire, last_fire, last_task, paused, pending_fire)
VALUES (:name, :next_fire, :last_fire, :last_task, :paused, :pending_fire)
ON CONFLICT (name) DO UPDATE SET next_fire = excluded.next_fire, last_fire = excluded.last_fire,
    last_task = excluded.last_task, paused = excluded.paused,
    pending_fire = excluded.pending_fire;

-- name: insert_token
INSERT INTO tokens (id, name, role, types, tags, hash, created, expires, parent)
VALUES (:id, :name, :role, :types, :tags, :hash, :created, :expires, :parent);

-- name: get_token
SELECT * FROM tokens WHERE id = :id;

-- name: list_tokens
SELECT * FROM tokens WHERE parent IS NULL ORDER BY name, created;

-- name: revoke_token
UPDATE tokens SET revoked = :now WHERE name = :name AND parent IS NULL AND revoked IS NULL
RETURNING *;

-- name: revoke_sessions
UPDATE tokens SET revoked = :now WHERE parent = :id AND revoked IS NULL;

-- name: end_session
UPDATE tokens SET revoked = :now WHERE id = :id AND parent IS NOT NULL AND revoked IS NULL;

-- name: after_states
-- The tasks a new one waits for (store/dependencies.py).
SELECT id, state FROM tasks WHERE id IN (SELECT value FROM json_each(:ids)) ORDER BY id;

-- name: insert_dep
INSERT OR IGNORE INTO task_deps (after_id, task_id) VALUES (:after_id, :task_id);

-- name: next_task_id
-- The id the next task inserted will have (AUTOINCREMENT: above every one used before), asked
-- only to word a refusal (store/dependencies.py).
SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'tasks'), 0),
           coalesce((SELECT max(id) FROM tasks), 0)) + 1;

-- name: take_dependents
-- The tasks waiting for one that ended, its edges removed as they are read (each is settled
-- once).
DELETE FROM task_deps WHERE after_id = :id RETURNING task_id;

-- name: count_down
UPDATE tasks SET waiting_for = waiting_for - 1 WHERE id = :id AND state = 'WAITING'
RETURNING waiting_for, after_policy;

-- name: skip
UPDATE tasks SET state = 'SKIPPED', finished = :now, error = :error, waiting_for = 0
WHERE id = :id AND state = 'WAITING'
RETURNING *;

-- name: release_waiting
-- Into the queue as if submitted now: its score moves on by the minutes it waited.
UPDATE tasks SET state = 'QUEUED', waiting_for = 0,
       score = score + (max(:now, coalesce(not_before, 0)) - max(added, coalesce(not_before, 0))) / 60.0
WHERE id = :id AND state = 'WAITING';

-- name: forget_waits
DELETE FROM task_deps WHERE task_id = :id;

-- name: ended_page
-- Retention (server/retention.py): ended tasks by the index on finished, a page at a time;
-- a group's newest ended tasks by id; removal by id, in short batches.
SELECT id, type, schedule, state, finished, version FROM tasks INDEXED BY tasks_by_finished
WHERE finished IS NOT NULL AND finished < :until AND finished >= :after_finished
  AND (finished > :after_finished OR id > :after_id)
  AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT', 'STOPPED', 'SKIPPED')
ORDER BY finished, id LIMIT :limit;

-- name: newest_of_type
-- A group's tasks newest first, a page at a time below an id (the caller counts the ended
-- ones): each page a short read, whatever the type's backlog of queued tasks.
SELECT id, schedule, (finished IS NOT NULL AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT',
       'STOPPED', 'SKIPPED')) AS ended
FROM tasks INDEXED BY tasks_by_type
WHERE type = :type AND id < :before ORDER BY id DESC LIMIT :limit;

-- name: newest_of_schedule
SELECT id, schedule, (finished IS NOT NULL AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT',
       'STOPPED', 'SKIPPED')) AS ended
FROM tasks INDEXED BY tasks_by_schedule
WHERE schedule = :schedule AND id < :before ORDER BY id DESC LIMIT :limit;

-- name: delete_ended
DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(:ids)) AND finished IS NOT NULL
  AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT', 'STOPPED', 'SKIPPED')
  -- a notification still to send reads the task: it stays until sent (or given up)
  AND NOT EXISTS (SELECT 1 FROM deliveries WHERE task_id = tasks.id AND state = 'pending')
  -- a running workflow run reads its tasks' results: they stay until it ends
  AND NOT EXISTS (SELECT 1 FROM run_tasks r JOIN workflow_runs w ON w.id = r.run_id
                  WHERE r.task_id = tasks.id AND w.state = 'running')
RETURNING id, type, schedule, state, finished, version;

-- name: delete_ended_deliveries
-- The settled notifications of removed tasks go with them (a pending one is still sent).
DELETE FROM deliveries WHERE task_id IN (SELECT value FROM json_each(:ids)) AND state != 'pending';

-- name: delete_ended_keys
DELETE FROM task_keys WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: max_task_id
SELECT coalesce(max(id), 0) AS n FROM tasks;

-- name: version_records
SELECT hash, type_name, created FROM versions ORDER BY created, hash;

-- name: versions_between
SELECT version, count(*) AS n FROM tasks WHERE id BETWEEN :first AND :last AND version IS NOT NULL
GROUP BY version;

-- name: delete_versions
DELETE FROM versions WHERE hash IN (SELECT value FROM json_each(:hashes));

-- name: insert_delivery
INSERT INTO deliveries (task_id, task_type, event, target_key, target, created, next_at)
VALUES (:task_id, :task_type, :event, :target_key, :target, :now, :now)
ON CONFLICT (task_id, target_key) DO NOTHING;

-- name: claim_deliveries
UPDATE deliveries SET next_at = :lease, attempts = attempts + 1
WHERE id IN (SELECT id FROM deliveries INDEXED BY deliveries_due
             WHERE state = 'pending' AND next_at <= :now ORDER BY next_at, id LIMIT :limit)
RETURNING *;

-- name: settle_delivery
UPDATE deliveries SET state = :state, next_at = COALESCE(:retry_at, next_at),
       finished = :finished, result = :result
WHERE id = :id AND attempts = :attempts AND state = 'pending';

-- name: task_deliveries
SELECT * FROM deliveries WHERE task_id = :task_id ORDER BY id;

-- name: next_delivery_at
SELECT min(next_at) FROM deliveries WHERE state = 'pending';

-- name: delete_settled_deliveries
DELETE FROM deliveries WHERE task_id = :task_id AND state != 'pending';

-- name: queued_by_type
-- By the partial index of queued tasks: the cost grows with the queue, not the table.
SELECT type, count(*) AS n FROM tasks INDEXED BY tasks_queue WHERE state = 'QUEUED' GROUP BY type;

-- name: insert_run
INSERT INTO workflow_runs (workflow, version, definition, environment, state, added,
                           submitted_by, schedule, dedupe_key)
VALUES (:workflow, :version, :definition, :environment, 'running', :added, :submitted_by,
        :schedule, :dedupe_key)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING *;

-- name: run_for_key
SELECT * FROM workflow_runs WHERE dedupe_key = :dedupe_key;

-- name: get_run
SELECT * FROM workflow_runs WHERE id = :id;

-- name: running_runs
SELECT * FROM workflow_runs WHERE state = 'running' ORDER BY id;

-- name: run_tasks
-- (columns in RunTask's order: rows.run_task_from_row reads them by place)
SELECT r.step, r.item, r.round, r.task_id, t.state, t.type, t.version, t.exit_code, t.error,
       t.started, t.finished
FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = :run_id ORDER BY r.step, r.item, r.round;

-- name: holds_version
-- By the partial index of held tasks (tasks_active): few, whatever the backlog.
SELECT 1 FROM tasks t JOIN workers w ON w.id = t.worker
WHERE t.state IN ('CLAIMED', 'RUNNING') AND t.version = :version AND w.owner = :owner LIMIT 1;

-- name: run_step_tasks
-- A page of one step's tasks (the primary key's order), of some states or all.
SELECT r.step, r.item, r.round, r.task_id, t.state, t.type, t.version, t.exit_code, t.error,
       t.started, t.finished
FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = :run_id AND r.step = :step
  AND (:all_states OR t.state IN (SELECT value FROM json_each(:states))
       OR (:removed AND t.id IS NULL))
ORDER BY r.item, r.round LIMIT :limit OFFSET :offset;

-- name: count_run_step_tasks
SELECT count(*) AS count FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = :run_id AND r.step = :step
  AND (:all_states OR t.state IN (SELECT value FROM json_each(:states))
       OR (:removed AND t.id IS NULL));

-- name: link_run_task
INSERT INTO run_tasks (run_id, step, item, round, task_id)
VALUES (:run_id, :step, :item, :round, :task_id)
ON CONFLICT DO NOTHING;

-- name: end_run
UPDATE workflow_runs SET state = :state, reason = :reason, finished = :now
WHERE id = :id AND state = 'running' AND (:round IS NULL OR round = :round)
RETURNING *;

-- name: rerun_run
UPDATE workflow_runs SET state = 'running', round = round + 1, reason = NULL, finished = NULL
WHERE id = :id AND state IN ('failed', 'stopped')
RETURNING *;

-- name: run_of_task
SELECT run_id, step, item, round FROM run_tasks WHERE task_id = :task_id;

-- name: list_runs
SELECT * FROM workflow_runs
WHERE (:workflow IS NULL OR workflow = :workflow) AND (:state IS NULL OR state = :state)
  AND (:schedule IS NULL OR schedule = :schedule) AND id < :before
ORDER BY id DESC LIMIT :limit;

-- name: active_steps
SELECT DISTINCT r.step FROM run_tasks r JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = :run_id AND t.state IN ('WAITING', 'QUEUED', 'CLAIMED', 'RUNNING');

-- name: versions_run
SELECT version, min(added) AS first, max(added) AS last, count(*) AS n
FROM tasks INDEXED BY tasks_by_type WHERE type = :type AND version IS NOT NULL
GROUP BY version ORDER BY max(added) DESC LIMIT :limit;

-- name: ended_since
SELECT type, state, CAST(finished / 60 AS INTEGER) AS minute, count(*) AS n,
       total(started - added) AS waited, count(started) AS started_n
FROM tasks INDEXED BY tasks_by_finished WHERE finished IS NOT NULL AND finished >= :since
GROUP BY type, state, minute;

-- name: queued_ahead
SELECT count(*) AS n FROM tasks WHERE state = 'QUEUED' AND (score < :score OR (score = :score AND id < :id));

-- name: run_first_task
SELECT min(task_id) AS task_id FROM run_tasks WHERE run_id = :run_id;

-- name: delete_ended_run_ids
-- Retention: the runs of removed tasks. A run keeps its links to them (a removed task shows
-- as removed, and a rerun makes it again); an ended run whose every task has gone goes,
-- with its links.
SELECT DISTINCT run_id FROM run_tasks WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: delete_emptied_runs
DELETE FROM workflow_runs WHERE id IN (SELECT value FROM json_each(:ids))
  AND state != 'running'
  AND NOT EXISTS (SELECT 1 FROM run_tasks r JOIN tasks t ON t.id = r.task_id
                  WHERE r.run_id = workflow_runs.id)
RETURNING id;

-- name: delete_run_links
DELETE FROM run_tasks WHERE run_id IN (SELECT value FROM json_each(:ids));

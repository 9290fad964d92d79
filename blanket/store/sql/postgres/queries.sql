-- Every query the PostgreSQL store runs, by name. Read this file to see the queue's whole behaviour.
-- Parameters are psycopg's %(name)s placeholders.

-- name: migration_lock
-- Several servers may start at once: one applies the migrations, the others wait and see them done.
SELECT pg_advisory_xact_lock(%(namespace)s, 0);

-- name: create_schema_table
CREATE TABLE IF NOT EXISTS blanket_schema (
    version     INTEGER PRIMARY KEY,
    applied     DOUBLE PRECISION NOT NULL
);

-- name: applied_migrations
SELECT version FROM blanket_schema;

-- name: record_migration
INSERT INTO blanket_schema (version, applied) VALUES (%(version)s, extract(epoch FROM now()));

-- name: scheduler_lock
-- Held by a dedicated session for as long as this server runs the scheduler.
SELECT pg_try_advisory_lock(%(namespace)s, 1) AS locked;

-- name: notify
-- The payload names the wake-up topics of the change (blanket/wakeups.py), space-separated.
SELECT pg_notify('blanket_queue', %(topics)s);

-- name: insert_task
-- In its final state: QUEUED, or as the tasks it waits for stand (store/dependencies.py).
-- `id`: one taken from next_task_id already (a task with a dedupe key and `after`), else NULL
-- for the next (COALESCE evaluates nextval only then; 'tasks_id_seq' is the BIGSERIAL's own
-- sequence, the column's default).
INSERT INTO tasks (id, type, state, environment, tags, score, added, not_before, schedule,
                   retries, retry_delay, timeout, priority, inputs,
                   submitted_by, secrets, after_ids, after_policy, waiting_for, finished, error)
VALUES (COALESCE(%(id)s::bigint, nextval('tasks_id_seq')), %(type)s, %(state)s,
        %(environment)s, %(tags)s, %(score)s, %(added)s, %(not_before)s, %(schedule)s,
        %(retries)s, %(retry_delay)s, %(timeout)s, %(priority)s, %(inputs)s,
        %(submitted_by)s, %(secrets)s, %(after)s::jsonb, %(policy)s, %(waiting_for)s,
        %(finished)s, %(error)s)
RETURNING *;

-- name: next_task_id
-- An id for a task before its row is inserted: a task with a dedupe key and `after` takes its
-- key under it first; a refusal naming a later task is worded by it (store/dependencies.py).
SELECT nextval('tasks_id_seq') AS id;

-- name: insert_key
-- Waits for a concurrent insert of the same key, then inserts nothing if that one committed.
INSERT INTO task_keys (key, task_id, fingerprint)
VALUES (%(key)s, %(task_id)s, %(fingerprint)s)
ON CONFLICT (key) DO NOTHING RETURNING task_id;

-- name: lock_keys
-- The dedupe keys of a list of tasks, locked for its transaction in one order: by one of 64
-- buckets of their hashes, so a list of 10,000 keys takes at most 64 locks (a lock a key filled
-- the server's shared lock table), and lists whose keys share a bucket wait for each other.
SELECT count(pg_advisory_xact_lock(%(namespace)s, b))
FROM (SELECT DISTINCT hashtext(k) & 63 AS b FROM unnest(%(keys)s::text[]) AS k ORDER BY b) AS s;

-- name: task_for_key
SELECT task_id FROM task_keys WHERE key = %(key)s;

-- name: key_entry
SELECT task_id, fingerprint FROM task_keys WHERE key = %(key)s;

-- name: get_task
SELECT * FROM tasks WHERE id = %(id)s;

-- name: delete_task
DELETE FROM tasks WHERE id = %(id)s RETURNING *;

-- name: delete_keys
DELETE FROM task_keys WHERE task_id = %(id)s;

-- name: type_cap_lock
-- Taken per capped type before counting its active tasks, so claimers on every server see one count.
SELECT pg_advisory_xact_lock(%(namespace)s, hashtext(%(type)s));

-- name: active_per_type
SELECT type, count(*) AS active FROM tasks
WHERE state IN ('CLAIMED', 'RUNNING') AND type = ANY(%(types)s)
GROUP BY type;

-- name: claim
-- Lowest (score, id) among queued tasks whose tags the worker has, whose start time has passed and
-- whose type is not at its cap. A loose index scan walks the lanes (type, tags) of the queue, so
-- many queued tasks this worker may not take cost one probe per lane, not one row each. Each open
-- lane's head is locked with SKIP LOCKED (rows another claimer holds are skipped, never waited
-- for), then the lowest head is claimed.
WITH RECURSIVE lanes(type, tags) AS (
    (SELECT type, tags FROM tasks WHERE state = 'QUEUED' ORDER BY type, tags LIMIT 1)
    UNION ALL
    SELECT after.type, after.tags FROM lanes CROSS JOIN LATERAL (
        SELECT t.type, t.tags FROM tasks t
        WHERE t.state = 'QUEUED' AND (t.type, t.tags) > (lanes.type, lanes.tags)
        ORDER BY t.type, t.tags LIMIT 1) after
), heads AS (
    SELECT head.id, head.score FROM lanes CROSS JOIN LATERAL (
        SELECT t.id, t.score FROM tasks t
        WHERE t.state = 'QUEUED' AND t.type = lanes.type AND t.tags = lanes.tags
          AND (t.not_before IS NULL OR t.not_before <= %(now)s)
        ORDER BY t.score, t.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED) head
    WHERE string_to_array(lanes.tags, ',') <@ %(tags)s::text[]
      AND NOT lanes.type = ANY(%(full_types)s::text[])
      -- a reserve leaves alone the lanes an idle worker could take from
      AND NOT EXISTS (SELECT 1 FROM unnest(%(idle_tags)s::text[]) AS idle(tags)
                      WHERE string_to_array(lanes.tags, ',') <@ string_to_array(idle.tags, ','))
)
UPDATE tasks SET state = 'CLAIMED', worker = %(worker)s, token = %(token)s, claimed = %(now)s,
       version = %(versions)s::jsonb ->> type, claim_key = %(key)s,
       heartbeat = %(now)s, attempt = attempt + 1, started = NULL, finished = NULL, pid = NULL,
       exit_code = NULL, progress = NULL, progress_message = NULL, error = NULL,
       stop_requested = FALSE
WHERE id = (SELECT id FROM heads ORDER BY score, id LIMIT 1)
RETURNING *;

-- name: claimed_by_key
-- The task a claim with this key already took for this worker, if it is still claimed (the
-- worker asks again because the answer never reached it).
SELECT * FROM tasks
WHERE state = 'CLAIMED' AND worker = %(worker)s AND claim_key = %(key)s
ORDER BY id LIMIT 1;

-- name: passes_over
-- Whether a lane (type, tags) of the queue needs a tag the worker lacks (a loose index scan:
-- one probe per lane).
WITH RECURSIVE lanes(type, tags) AS (
    (SELECT type, tags FROM tasks WHERE state = 'QUEUED' ORDER BY type, tags LIMIT 1)
    UNION ALL
    SELECT after.type, after.tags FROM lanes CROSS JOIN LATERAL (
        SELECT t.type, t.tags FROM tasks t
        WHERE t.state = 'QUEUED' AND (t.type, t.tags) > (lanes.type, lanes.tags)
        ORDER BY t.type, t.tags LIMIT 1) after
)
SELECT EXISTS (SELECT 1 FROM lanes
               WHERE NOT string_to_array(lanes.tags, ',') <@ %(tags)s::text[]) AS passes_over;

-- name: idle_worker_tags
SELECT tags FROM workers
WHERE state = 'idle' AND id != %(worker)s AND heartbeat > %(since)s;

-- name: release
UPDATE tasks SET state = 'QUEUED', worker = NULL, token = NULL, claimed = NULL,
       heartbeat = NULL, attempt = attempt - 1
WHERE id = %(id)s AND token = %(token)s AND state = 'CLAIMED'
RETURNING *;

-- name: worker_busy
UPDATE workers SET heartbeat = %(now)s, task = %(id)s,
       state = CASE WHEN state IN ('idle', 'gone') THEN 'busy' ELSE state END
WHERE id = %(worker)s;

-- name: bind_version
UPDATE tasks SET version = %(version)s
WHERE id = %(id)s AND token = %(token)s AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: mark_started
UPDATE tasks SET state = 'RUNNING', started = %(now)s, heartbeat = %(now)s, pid = %(pid)s,
       directory = COALESCE(%(directory)s, directory)
WHERE id = %(id)s AND token = %(token)s AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: worker_heartbeat
UPDATE workers SET heartbeat = %(now)s WHERE id = %(worker)s;

-- name: heartbeat
UPDATE tasks SET heartbeat = %(now)s
WHERE id = %(id)s AND token = %(token)s AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: progress_by_token
UPDATE tasks SET progress = %(value)s, progress_message = %(message)s
WHERE id = %(id)s AND token = %(token)s AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: progress_any
UPDATE tasks SET progress = %(value)s, progress_message = %(message)s
WHERE id = %(id)s AND state IN ('CLAIMED', 'RUNNING')
RETURNING *;

-- name: lock_current
SELECT * FROM tasks
WHERE id = %(id)s AND token = %(token)s AND state IN ('CLAIMED', 'RUNNING')
FOR UPDATE;

-- name: finish
UPDATE tasks SET state = %(state)s, exit_code = %(exit_code)s, error = %(error)s,
       finished = %(finished)s, token = NULL, attempts = %(attempts)s,
       started = COALESCE(started, %(started)s), pid = COALESCE(pid, %(pid)s),
       directory = COALESCE(%(directory)s, directory)
WHERE id = %(id)s
RETURNING *;

-- name: requeue
UPDATE tasks SET state = 'QUEUED', exit_code = %(exit_code)s, error = %(error)s, finished = NULL,
       token = NULL, worker = NULL, attempts = %(attempts)s, not_before = %(not_before)s,
       attempt = attempt - %(refund)s,
       score = %(score)s, pid = NULL, directory = COALESCE(%(directory)s, directory)
WHERE id = %(id)s
RETURNING *;

-- name: request_stop
UPDATE tasks SET stop_requested = TRUE, stopped_by = %(by)s
WHERE id = %(id)s AND state IN ('CLAIMED', 'RUNNING');

-- name: stop_queued
UPDATE tasks SET state = 'STOPPED', finished = %(now)s, error = 'stopped before it started',
    stopped_by = %(by)s
WHERE id = %(id)s AND state IN ('QUEUED', 'WAITING')
RETURNING *;

-- name: stale_tasks
SELECT * FROM tasks WHERE state IN ('CLAIMED', 'RUNNING') AND heartbeat < %(before)s ORDER BY id;

-- name: next_not_before
SELECT min(not_before) AS at FROM tasks
WHERE state = 'QUEUED' AND not_before IS NOT NULL AND not_before > %(now)s;

-- name: recent_durations
SELECT finished - started AS duration FROM tasks
WHERE type = %(type)s AND state = 'SUCCESS' AND started IS NOT NULL
ORDER BY finished DESC LIMIT %(limit)s;

-- name: record_version
INSERT INTO versions (hash, type_name, created) VALUES (%(hash)s, %(type)s, %(created)s)
ON CONFLICT (hash) DO NOTHING;

-- name: save_worker
INSERT INTO workers (id, tags, host, pid, state, registered, heartbeat, task, stop_mode,
                     owner)
VALUES (%(id)s, %(tags)s, %(host)s, %(pid)s, %(state)s, %(registered)s, %(heartbeat)s, %(task)s,
        %(stop_mode)s, %(owner)s)
ON CONFLICT (id) DO UPDATE SET tags = excluded.tags, host = excluded.host, pid = excluded.pid,
    state = excluded.state, registered = excluded.registered, heartbeat = excluded.heartbeat,
    task = excluded.task, stop_mode = excluded.stop_mode, owner = excluded.owner;

-- name: get_worker
SELECT * FROM workers WHERE id = %(id)s;

-- name: attempt_worker
SELECT workers.* FROM tasks JOIN workers ON workers.id = tasks.worker
WHERE tasks.id = %(id)s AND tasks.token = %(token)s;

-- name: list_workers
SELECT * FROM workers ORDER BY id;

-- name: delete_worker
DELETE FROM workers WHERE id = %(id)s;

-- name: touch_worker
UPDATE workers SET heartbeat = %(now)s, task = %(task)s,
       state = CASE WHEN state IN ('idle', 'busy', 'gone')
                    THEN CASE WHEN CAST(%(task)s AS BIGINT) IS NULL THEN 'idle' ELSE 'busy' END
                    ELSE state END
WHERE id = %(id)s;

-- name: set_worker_state
UPDATE workers SET state = CASE WHEN CAST(%(state)s AS TEXT) = 'idle' AND task IS NOT NULL THEN 'busy'
                                ELSE %(state)s END
WHERE id = %(id)s AND state != 'stopping'
RETURNING *;

-- name: stop_worker
UPDATE workers SET state = 'stopping', stop_mode = %(mode)s WHERE id = %(id)s RETURNING *;

-- name: get_schedule_state
SELECT * FROM schedule_state WHERE name = %(name)s;

-- name: planned_schedules
SELECT name FROM schedule_state WHERE next_fire IS NOT NULL OR pending_fire IS NOT NULL
ORDER BY name;

-- name: save_schedule_state
INSERT INTO schedule_state (name, next_fire, last_fire, last_task, paused, pending_fire)
VALUES (%(name)s, %(next_fire)s, %(last_fire)s, %(last_task)s, %(paused)s, %(pending_fire)s)
ON CONFLICT (name) DO UPDATE SET next_fire = excluded.next_fire, last_fire = excluded.last_fire,
    last_task = excluded.last_task, paused = excluded.paused,
    pending_fire = excluded.pending_fire;

-- name: insert_token
INSERT INTO tokens (id, name, role, types, tags, hash, created, expires, parent)
VALUES (%(id)s, %(name)s, %(role)s, %(types)s, %(tags)s, %(hash)s, %(created)s, %(expires)s, %(parent)s);

-- name: get_token
SELECT * FROM tokens WHERE id = %(id)s;

-- name: list_tokens
SELECT * FROM tokens WHERE parent IS NULL ORDER BY name, created;

-- name: revoke_token
UPDATE tokens SET revoked = %(now)s WHERE name = %(name)s AND parent IS NULL AND revoked IS NULL
RETURNING *;

-- name: revoke_sessions
UPDATE tokens SET revoked = %(now)s WHERE parent = %(id)s AND revoked IS NULL;

-- name: end_session
UPDATE tokens SET revoked = %(now)s WHERE id = %(id)s AND parent IS NOT NULL AND revoked IS NULL;

-- name: after_states
-- The tasks a new one waits for (store/dependencies.py), locked FOR SHARE in id order: an
-- end of one committing meanwhile is waited for, so its transaction sees this one's edges
-- (or this one sees it ended), never neither.
SELECT id, state FROM tasks WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR SHARE;

-- name: insert_dep
INSERT INTO task_deps (after_id, task_id) VALUES (%(after_id)s, %(task_id)s)
ON CONFLICT DO NOTHING;

-- name: take_dependents
-- The tasks waiting for one that ended, its edges removed as they are read (each is settled
-- once).
DELETE FROM task_deps WHERE after_id = %(id)s RETURNING task_id;

-- name: count_down
UPDATE tasks SET waiting_for = waiting_for - 1 WHERE id = %(id)s AND state = 'WAITING'
RETURNING waiting_for, after_policy;

-- name: skip
UPDATE tasks SET state = 'SKIPPED', finished = %(now)s, error = %(error)s, waiting_for = 0
WHERE id = %(id)s AND state = 'WAITING'
RETURNING *;

-- name: release_waiting
UPDATE tasks SET state = 'QUEUED', waiting_for = 0,
       score = score + (GREATEST(%(now)s, coalesce(not_before, 0))
                        - GREATEST(added, coalesce(not_before, 0))) / 60.0
WHERE id = %(id)s AND state = 'WAITING';

-- name: forget_waits
DELETE FROM task_deps WHERE task_id = %(id)s;

-- name: ended_page
-- Retention (server/retention.py): ended tasks by the index on finished, a page at a time;
-- a group's newest ended tasks by id; removal by id, in short batches.
SELECT id, type, schedule, state, finished, version FROM tasks
WHERE finished IS NOT NULL AND finished < %(until)s AND finished >= %(after_finished)s
  AND (finished > %(after_finished)s OR id > %(after_id)s)
  AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT', 'STOPPED', 'SKIPPED')
ORDER BY finished, id LIMIT %(limit)s;

-- name: newest_of_type
-- A group's tasks newest first, a page at a time below an id (the caller counts the ended
-- ones): each page a short read, whatever the type's backlog of queued tasks.
SELECT id, schedule, (finished IS NOT NULL AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT',
       'STOPPED', 'SKIPPED')) AS ended
FROM tasks WHERE type = %(type)s AND id < %(before)s ORDER BY id DESC LIMIT %(limit)s;

-- name: newest_of_schedule
SELECT id, schedule, (finished IS NOT NULL AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT',
       'STOPPED', 'SKIPPED')) AS ended
FROM tasks WHERE schedule = %(schedule)s AND id < %(before)s ORDER BY id DESC LIMIT %(limit)s;

-- name: delete_ended
DELETE FROM tasks WHERE id = ANY(%(ids)s::bigint[]) AND finished IS NOT NULL
  AND state IN ('SUCCESS', 'FAILED', 'TIMEDOUT', 'STOPPED', 'SKIPPED')
  -- a notification still to send reads the task: it stays until sent (or given up)
  AND NOT EXISTS (SELECT 1 FROM deliveries WHERE task_id = tasks.id AND state = 'pending')
  -- a running workflow run reads its tasks' results: they stay until it ends
  AND NOT EXISTS (SELECT 1 FROM run_tasks r JOIN workflow_runs w ON w.id = r.run_id
                  WHERE r.task_id = tasks.id AND w.state = 'running')
RETURNING id, type, schedule, state, finished, version;

-- name: delete_ended_deliveries
-- The settled notifications of removed tasks go with them (a pending one is still sent).
DELETE FROM deliveries WHERE task_id = ANY(%(ids)s::bigint[]) AND state != 'pending';

-- name: delete_ended_keys
DELETE FROM task_keys WHERE task_id = ANY(%(ids)s::bigint[]);

-- name: max_task_id
SELECT coalesce(max(id), 0) AS n FROM tasks;

-- name: version_records
SELECT hash, type_name, created FROM versions ORDER BY created, hash;

-- name: versions_between
SELECT version, count(*) AS n FROM tasks
WHERE id BETWEEN %(first)s AND %(last)s AND version IS NOT NULL GROUP BY version;

-- name: delete_versions
DELETE FROM versions WHERE hash = ANY(%(hashes)s::text[]);

-- name: sweep_lock
-- Held by a dedicated session while this server sweeps (retention), released after.
SELECT pg_try_advisory_lock(%(namespace)s, 2) AS locked;

-- name: insert_delivery
INSERT INTO deliveries (task_id, task_type, event, target_key, target, created, next_at)
VALUES (%(task_id)s, %(task_type)s, %(event)s, %(target_key)s, %(target)s, %(now)s, %(now)s)
ON CONFLICT (task_id, target_key) DO NOTHING;

-- name: claim_deliveries
-- Rows another server is taking are skipped, not waited for: each is sent by one server.
UPDATE deliveries SET next_at = %(lease)s, attempts = attempts + 1
WHERE id IN (SELECT id FROM deliveries
             WHERE state = 'pending' AND next_at <= %(now)s ORDER BY next_at, id
             LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING *;

-- name: settle_delivery
UPDATE deliveries SET state = %(state)s, next_at = COALESCE(%(retry_at)s, next_at),
       finished = %(finished)s, result = %(result)s
WHERE id = %(id)s AND attempts = %(attempts)s AND state = 'pending';

-- name: task_deliveries
SELECT * FROM deliveries WHERE task_id = %(task_id)s ORDER BY id;

-- name: next_delivery_at
SELECT min(next_at) AS next_at FROM deliveries WHERE state = 'pending';

-- name: delete_settled_deliveries
DELETE FROM deliveries WHERE task_id = %(task_id)s AND state != 'pending';

-- name: queued_by_type
-- By the partial index of queued tasks: the cost grows with the queue, not the table.
SELECT type, count(*) AS n FROM tasks WHERE state = 'QUEUED' GROUP BY type;

-- name: insert_run
INSERT INTO workflow_runs (workflow, version, definition, environment, state, added,
                           submitted_by, schedule, dedupe_key)
VALUES (%(workflow)s, %(version)s, %(definition)s, %(environment)s, 'running', %(added)s,
        %(submitted_by)s, %(schedule)s, %(dedupe_key)s)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING *;

-- name: run_for_key
SELECT * FROM workflow_runs WHERE dedupe_key = %(dedupe_key)s;

-- name: get_run
SELECT * FROM workflow_runs WHERE id = %(id)s;

-- name: running_runs
SELECT * FROM workflow_runs WHERE state = 'running' ORDER BY id;

-- name: run_tasks
-- (columns in RunTask's order: rows.run_task_from_row reads them by place)
SELECT r.step, r.item, r.round, r.task_id, t.state, t.type, t.version, t.exit_code, t.error,
       t.started, t.finished
FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = %(run_id)s ORDER BY r.step, r.item, r.round;

-- name: holds_version
SELECT 1 FROM tasks t JOIN workers w ON w.id = t.worker
WHERE t.state IN ('CLAIMED', 'RUNNING') AND t.version = %(version)s AND w.owner = %(owner)s
LIMIT 1;

-- name: run_step_tasks
-- A page of one step's tasks (the primary key's order), of some states or all.
SELECT r.step, r.item, r.round, r.task_id, t.state, t.type, t.version, t.exit_code, t.error,
       t.started, t.finished
FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = %(run_id)s AND r.step = %(step)s
  AND (%(all_states)s OR t.state = ANY(%(states)s::text[])
       OR (%(removed)s AND t.id IS NULL))
ORDER BY r.item, r.round LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_run_step_tasks
SELECT count(*) AS count FROM run_tasks r LEFT JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = %(run_id)s AND r.step = %(step)s
  AND (%(all_states)s OR t.state = ANY(%(states)s::text[])
       OR (%(removed)s AND t.id IS NULL));

-- name: link_run_task
INSERT INTO run_tasks (run_id, step, item, round, task_id)
VALUES (%(run_id)s, %(step)s, %(item)s, %(round)s, %(task_id)s)
ON CONFLICT DO NOTHING;

-- name: end_run
UPDATE workflow_runs SET state = %(state)s, reason = %(reason)s, finished = %(now)s
WHERE id = %(id)s AND state = 'running'
  AND (%(round)s::integer IS NULL OR round = %(round)s::integer)
RETURNING *;

-- name: rerun_run
UPDATE workflow_runs SET state = 'running', round = round + 1, reason = NULL, finished = NULL
WHERE id = %(id)s AND state IN ('failed', 'stopped')
RETURNING *;

-- name: run_of_task
SELECT run_id, step, item, round FROM run_tasks WHERE task_id = %(task_id)s;

-- name: list_runs
SELECT * FROM workflow_runs
WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s::text)
  AND (%(state)s::text IS NULL OR state = %(state)s::text)
  AND (%(schedule)s::text IS NULL OR schedule = %(schedule)s::text)
  AND id < %(before)s
ORDER BY id DESC LIMIT %(limit)s;

-- name: active_steps
SELECT DISTINCT r.step FROM run_tasks r JOIN tasks t ON t.id = r.task_id
WHERE r.run_id = %(run_id)s AND t.state IN ('WAITING', 'QUEUED', 'CLAIMED', 'RUNNING');

-- name: versions_run
SELECT version, min(added) AS first, max(added) AS last, count(*) AS n FROM tasks
WHERE type = %(type)s AND version IS NOT NULL
GROUP BY version ORDER BY max(added) DESC LIMIT %(limit)s;

-- name: ended_since
SELECT type, state, floor(finished / 60)::bigint AS minute, count(*) AS n,
       coalesce(sum(started - added), 0) AS waited, count(started) AS started_n
FROM tasks WHERE finished IS NOT NULL AND finished >= %(since)s
GROUP BY type, state, minute;

-- name: queued_ahead
SELECT count(*) AS n FROM tasks WHERE state = 'QUEUED'
  AND (score < %(score)s OR (score = %(score)s AND id < %(id)s));

-- name: run_first_task
SELECT min(task_id) AS task_id FROM run_tasks WHERE run_id = %(run_id)s;

-- name: delete_ended_run_ids
-- Retention: the runs of removed tasks. A run keeps its links to them (a removed task shows
-- as removed, and a rerun makes it again); an ended run whose every task has gone goes,
-- with its links.
SELECT DISTINCT run_id FROM run_tasks WHERE task_id = ANY(%(ids)s::bigint[]);

-- name: delete_emptied_runs
DELETE FROM workflow_runs WHERE id = ANY(%(ids)s::bigint[])
  AND state != 'running'
  AND NOT EXISTS (SELECT 1 FROM run_tasks r JOIN tasks t ON t.id = r.task_id
                  WHERE r.run_id = workflow_runs.id)
RETURNING id;

-- name: delete_run_links
DELETE FROM run_tasks WHERE run_id = ANY(%(ids)s::bigint[]);

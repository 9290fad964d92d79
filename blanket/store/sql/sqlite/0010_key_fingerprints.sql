-- What a client's Idempotency-Key was first sent with (a hash of the request): the same
-- key sent again with a different request is refused (422), rather than answered with the
-- first task as if it were the same.
ALTER TABLE task_keys ADD COLUMN fingerprint TEXT;

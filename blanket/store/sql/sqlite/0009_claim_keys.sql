-- The key of the claim that took a task (`claim_key`): a worker that did not get a claim's
-- answer (the server was killed, or the connection broke, after the claim was stored) asks
-- again with the same key and is answered the same task, rather than leaving it claimed by
-- nobody until it counts as lost.
ALTER TABLE tasks ADD COLUMN claim_key TEXT;

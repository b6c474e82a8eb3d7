-- The audit log (migration 0015): one row per change, in the change's own transaction.

-- name: record
-- One change: who, what, and the settings before and after (already redacted).
INSERT INTO audit (actor, action, target, before, after)
VALUES (%(actor)s, %(action)s, %(target)s, %(before)s::jsonb, %(after)s::jsonb);

-- name: list
-- The newest changes first (the primary key follows the order of commits closely enough).
SELECT id, at, actor, action, target, before, after
FROM audit
WHERE %(since)s::timestamptz IS NULL OR at >= %(since)s
ORDER BY id DESC
LIMIT %(limit)s;

-- name: expire
-- Retention (history.raw_days, by the maintenance job): rows older than that go, as raw results do.
DELETE FROM audit WHERE at < now() - make_interval(days => %(days)s);

-- Schema version 11: push (heartbeat) monitors, `push://NAME` (issue 20, DESIGN.md section 12).
--
-- sitewatch checks nothing for a push monitor: the job pings /ping/TOKEN on the web listener.
-- Its slots are those of any monitor (push_slot, push_slot + period, ...), and each gets one
-- task_result row like every other slot, so history, uptime, alerts and the page need nothing
-- new. The slot rules live in sitewatch/check/push.py and sitewatch/db/push.sql:
--
-- * push_slot is the start of the oldest slot with no result yet (the cursor). A ping settles
--   it and moves it on by a period.
-- * next_check_at is, for a push monitor, the moment its cursor slot is missed: the slot's end
--   plus grace (or an open /start run's start plus grace, whichever is first). So the
--   producer's "what is due" index and its sleep (seconds_until_due) serve the missed slots
--   too; enqueue_due leaves push monitors out (they are never checked).
-- * Only the token's SHA-256 is stored: a token is 192 random bits, so a plain hash is enough
--   (no salt or slow hash is needed against guessing), and a ping finds its monitor by one
--   index probe.
ALTER TABLE url
    ADD COLUMN grace           integer CHECK (grace >= 0),   -- push: seconds a ping may be late
    ADD COLUMN push_token_hash bytea UNIQUE,                 -- push: sha256 of the ping token
    ADD COLUMN push_slot       timestamptz,                  -- push: oldest slot with no result
    ADD COLUMN push_started_at timestamptz;                  -- push: an open /start run began

-- The missed-slot writer's scan (push.sql record_missed): push monitors only, by deadline.
CREATE INDEX url_push_due_idx ON url (next_check_at) WHERE push_slot IS NOT NULL;

-- A ping's POST body (at most 10 KB, made printable): the job's own words, e.g. its log tail.
-- Nullable with no default: a catalog change only, even on a big partitioned table.
ALTER TABLE task_result ADD COLUMN message text;

-- Schema version 15: the audit log (issue 22, DESIGN.md section 12: "Every write is recorded in
-- `audit` (who, when, what)").
--
-- One row per change, written by sitewatch/manage/audit.py in the same transaction as the
-- change, so a change is never without its row and a rolled-back change leaves none. `actor` is
-- the API token's name (web.tokens) or `cli:USER@HOST`; `before` and `after` are the settings
-- as JSON with every secret already redacted (they are shown as they are stored).
CREATE TABLE audit (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- newest first: ORDER BY id DESC
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    action  text NOT NULL,       -- url.add, url.update, url.remove, url.import, apply, silence.add, ...
    target  text,                -- the monitor's name or redacted URL, a silence's id, ...
    before  jsonb,
    after   jsonb
);
CREATE INDEX audit_at ON audit (at);      -- `audit --since`, and retention by age

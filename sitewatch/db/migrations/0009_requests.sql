-- Schema version 9: request options and monitor names (DESIGN.md section 12, issue 19).
--
-- A monitor's identity is its name when it has one, else its URL: one URL may be monitored
-- several times, each with its own name. So url.url is unique only among unnamed monitors,
-- and an index on (url, id) keeps what the old UNIQUE (url) index served (the web's keyset
-- walk in URL order, now continued by id; lookups by URL). Every existing row stays as it is: unnamed, GET or
-- HEAD, no headers or body; ids, results and incidents are untouched.
--
-- Headers, bearer and body are stored as written, `${VAR}` unexpanded: the checking host
-- reads the variables at check time, so no secret has to be stored.
ALTER TABLE url
    ADD COLUMN name        text UNIQUE,
    ADD COLUMN headers     text[],                   -- "Name: value", in order
    ADD COLUMN body        bytea,
    ADD COLUMN body_json   boolean NOT NULL DEFAULT false,  -- sent with Content-Type: application/json
    ADD COLUMN bearer      text,
    ADD COLUMN client_cert text,                     -- file paths on the checking hosts
    ADD COLUMN client_key  text,
    ADD COLUMN ip_version  smallint CHECK (ip_version IN (4, 6));   -- null: any

CREATE INDEX url_url_idx ON url (url, id);      -- the web's pages: by URL, then id
CREATE UNIQUE INDEX url_unnamed_url_key ON url (url) WHERE name IS NULL;
ALTER TABLE url DROP CONSTRAINT url_url_key;

-- Schema version 7: per-phase timings of each check (issue 23), from either engine.
--
-- Each is the final hop's phase as its own duration in milliseconds: DNS lookup, TCP
-- connect, TLS handshake (https only), and first byte (request sent to the first byte of
-- the response). Null when the check did not get that far, or the engine could not tell.
-- response_time_ms stays the total. `real` (4 bytes, 6 significant digits: enough for a
-- millisecond figure) keeps the row and its write small; nullable without a default, so
-- adding them rewrites nothing, on any partition.

ALTER TABLE task_result
    ADD COLUMN dns_ms real,
    ADD COLUMN connect_ms real,
    ADD COLUMN tls_ms real,
    ADD COLUMN first_byte_ms real;

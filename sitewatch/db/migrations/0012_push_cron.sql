-- Schema version 12: cron schedules for push monitors, `url add push://NAME --cron EXPR --tz ZONE`
-- (issue 20, DESIGN.md section 12: "--cron EXPR --tz ZONE replaces the period").
--
-- A cron monitor's slots are its fire times in its zone, computed in Python with croniter
-- (sitewatch/check/pushcron.py), not by period arithmetic in SQL: push_slot is still the oldest
-- fire time with no result and next_check_at the moment it is missed, and db/pushstore.py moves
-- them with a compare-and-set on the values it read, so two hosts never both move them.
-- `period` stays NOT NULL and meaningful: for a cron monitor it is the schedule's longest gap
-- between fires (what `status` coverage divides by). Both new columns are null for every other
-- monitor: a catalog change only.
ALTER TABLE url
    ADD COLUMN cron text,            -- push: 5-field cron expression, or null (fixed-rate: period)
    ADD COLUMN tz   text,            -- push: the IANA zone the expression is read in
    ADD CONSTRAINT url_cron_tz CHECK ((cron IS NULL) = (tz IS NULL));

-- Mark messages the broker delivered as a redelivery (the MQTT DUP flag). A message committed but not
-- yet acknowledged when the engine crashed is delivered again after the restart, always with this mark,
-- so a duplicate row in the history is a `dup = 1` row whose topic and payload equal an earlier row's.
-- (A `dup = 1` row is not always a duplicate: the first copy may not have been committed.)
ALTER TABLE messages ADD COLUMN dup INTEGER NOT NULL DEFAULT 0;

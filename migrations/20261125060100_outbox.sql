-- Publishes that rules made while the broker could not be reached (or that were on their way when the
-- connection failed): kept here, in order, until the broker acknowledged them, so they survive an
-- outage and an engine restart. Empty in normal operation.
CREATE TABLE outbox (
    id      INTEGER PRIMARY KEY,        -- delivery order
    ts      INTEGER NOT NULL,           -- unix milliseconds, when it was queued
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL
);

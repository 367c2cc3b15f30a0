-- Publishes the broker refused: a row whose sending made the broker close the connection, a few times
-- in a row, is moved here so the rows behind it are delivered. Kept for the owner to look at (the log
-- names each one); nothing sends them again.
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;  -- failed deliveries, one row at a time

CREATE TABLE outbox_refused (
    id         INTEGER PRIMARY KEY,     -- its id in the outbox
    ts         INTEGER NOT NULL,        -- unix milliseconds, when it was queued
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    refused_at INTEGER NOT NULL         -- unix milliseconds, when it was set aside
);

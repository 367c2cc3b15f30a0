-- The history a home owner queries with SQL. Column names and meanings are a user contract
-- (PRODUCT.md): change them only with a new migration.

-- Every message the engine received, in arrival order.
-- payload is TEXT when the bytes are valid UTF-8 (so SQL string and JSON functions just work)
-- and a BLOB otherwise, byte for byte; the BLOB declaration makes SQLite keep whichever was bound.
CREATE TABLE messages (
    id      INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,           -- unix milliseconds, when the engine received it
    topic   TEXT    NOT NULL,
    payload BLOB    NOT NULL,
    qos     INTEGER NOT NULL,
    retain  INTEGER NOT NULL            -- 0 or 1
);
-- "values of this topic over time" and "latest of this topic" both start from the topic.
CREATE INDEX messages_topic_ts ON messages (topic, ts);
-- "everything in this time range" (replay, retention).
CREATE INDEX messages_ts ON messages (ts);

-- The newest message id per topic, kept by a trigger so `latest` is an index lookup
-- instead of a scan of the whole history.
CREATE TABLE topics (
    topic     TEXT PRIMARY KEY,
    latest_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TRIGGER messages_track_latest AFTER INSERT ON messages
BEGIN
    INSERT INTO topics (topic, latest_id) VALUES (new.topic, new.id)
    ON CONFLICT (topic) DO UPDATE SET latest_id = excluded.latest_id
    WHERE excluded.latest_id > topics.latest_id;
END;

-- The newest row of `messages` per topic.
CREATE VIEW latest AS
SELECT m.id, m.ts, t.topic, m.payload, m.qos, m.retain
FROM topics t JOIN messages m ON m.id = t.latest_id;

-- Everything rules did, with the rule that did it.
CREATE TABLE actions (
    id     INTEGER PRIMARY KEY,
    ts     INTEGER NOT NULL,            -- unix milliseconds
    rule   TEXT    NOT NULL,
    kind   TEXT    NOT NULL,            -- 'publish' | 'relay'
    target TEXT    NOT NULL,            -- topic or relay name
    value  BLOB                         -- payload or state
);
CREATE INDEX actions_ts ON actions (ts);

-- One row per rule run: "why did (or didn't) it fire?"
CREATE TABLE rule_runs (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,       -- unix milliseconds, when the run started
    rule        TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,       -- 'on_message' | 'on_start' | ...
    topic       TEXT,                   -- the message topic that triggered it, if any
    duration_us INTEGER NOT NULL,
    error       TEXT,                   -- 'rules/NAME.rhai:LINE:COL: message' when it failed
    actions     INTEGER NOT NULL DEFAULT 0  -- how many actions the run asked for
);
CREATE INDEX rule_runs_rule_ts ON rule_runs (rule, ts);

-- What rules persisted with store_set (value is JSON text).
CREATE TABLE store (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

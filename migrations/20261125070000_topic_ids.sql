-- Topics stored once, as integer ids: a history is mostly a few hundred topics repeated millions of
-- times, and storing each row's topic text (twice, with the (topic, ts) index) made a message take 2.6x
-- its topic + payload bytes on disk (issue 7; an SD card both fills and wears with that). The owner's
-- surface is unchanged: `messages` and `latest` are views with the same columns, and `INSERT` and
-- `DELETE` on `messages` still work (for importing old data or removing rows in the sqlite3 shell).
--
-- There is no separate ts index any more: a time range over all topics is answered through the
-- (topic_id, ts) index once per topic (SQLite plans it so once `PRAGMA optimize` has gathered
-- statistics, which the engine runs at start and hourly), and `latest` needs no upkeep on insert.

-- AUTOINCREMENT: an id is never given to another topic, even after an owner deleted a topic by hand
-- (the engine keeps the ids it knows in memory).
CREATE TABLE topics_by_id (
    id    INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT    NOT NULL UNIQUE
);
INSERT INTO topics_by_id (topic) SELECT DISTINCT topic FROM messages ORDER BY topic;

-- The rows behind the `messages` view, in arrival order.
CREATE TABLE message_rows (
    id       INTEGER PRIMARY KEY,
    ts       INTEGER NOT NULL,      -- unix milliseconds, when the engine received it
    topic_id INTEGER NOT NULL,      -- topics.id
    payload  BLOB    NOT NULL,      -- TEXT when valid UTF-8, else a BLOB (see the first migration)
    qos      INTEGER NOT NULL,
    retain   INTEGER NOT NULL,
    dup      INTEGER NOT NULL DEFAULT 0
);
INSERT INTO message_rows (id, ts, topic_id, payload, qos, retain, dup)
SELECT m.id, m.ts, t.id, m.payload, m.qos, m.retain, m.dup
FROM messages m JOIN topics_by_id t ON t.topic = m.topic
ORDER BY m.id;

DROP VIEW latest;
DROP TRIGGER messages_track_latest;
DROP TABLE messages;
DROP TABLE topics;
ALTER TABLE topics_by_id RENAME TO topics;

-- "values of this topic over time", "latest of this topic" and, once per topic, "everything in this
-- time range".
CREATE INDEX message_rows_topic_ts ON message_rows (topic_id, ts);

-- Every message the engine received, in arrival order (the columns of PRODUCT.md, plus dup).
CREATE VIEW messages AS
SELECT m.id, m.ts, t.topic, m.payload, m.qos, m.retain, m.dup
FROM message_rows m JOIN topics t ON t.id = m.topic_id;

-- The newest row of `messages` per topic: the last entry of the topic's index range, one seek each.
-- Newest by `ts` (ties by arrival), like every time-ordered query: a row stamped by a clock that was
-- ahead and later stepped back stays the newest until the clock passes its time again.
CREATE VIEW latest AS
SELECT m.id, m.ts, t.topic, m.payload, m.qos, m.retain
FROM topics t JOIN message_rows m ON m.id = (
    SELECT r.id FROM message_rows r WHERE r.topic_id = t.id ORDER BY r.ts DESC, r.id DESC LIMIT 1
);

CREATE TRIGGER messages_insert INSTEAD OF INSERT ON messages
BEGIN
    -- Not INSERT OR IGNORE: the conflict clause of the statement that fired the trigger overrides the
    -- trigger's own, and an owner's INSERT OR REPLACE INTO messages would then give the topic a new id
    -- and orphan its history.
    INSERT INTO topics (topic) SELECT new.topic
    WHERE NOT EXISTS (SELECT 1 FROM topics WHERE topic = new.topic);
    INSERT INTO message_rows (id, ts, topic_id, payload, qos, retain, dup)
    VALUES (new.id, new.ts, (SELECT id FROM topics WHERE topic = new.topic), new.payload, new.qos,
            new.retain, coalesce(new.dup, 0));
END;

CREATE TRIGGER messages_delete INSTEAD OF DELETE ON messages
BEGIN
    DELETE FROM message_rows WHERE id = old.id;
END;

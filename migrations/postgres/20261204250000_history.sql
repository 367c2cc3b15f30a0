-- The shared history on PostgreSQL, written by each house's engine (`history.replicate`): the same
-- names and columns as the local SQLite history, plus `site`, the house a row comes from. Rows are
-- keyed by (site, id) with the house's own ids, so a batch sent twice (after a crash between the
-- server's commit and the engine's mark) adds nothing.
--
-- Text that SQLite holds as TEXT is `text` here; a payload or value that is not valid UTF-8 (or holds
-- a NUL, which PostgreSQL's text cannot) is NULL in `payload`/`value` and kept byte for byte in
-- `payload_bytes`/`value_bytes`.

-- Every message, partitioned by month of `ts` (unix milliseconds, UTC): old months can be detached or
-- dropped whole, and a time range reads only its months. The engine creates each month's partition
-- (message_rows_pYYYYMM) before its first row, and the next month's ahead.
CREATE TABLE message_rows (
    site          TEXT     NOT NULL,
    id            BIGINT   NOT NULL,
    ts            BIGINT   NOT NULL,
    topic         TEXT     NOT NULL,
    payload       TEXT,
    payload_bytes BYTEA,
    qos           SMALLINT NOT NULL,
    retain        SMALLINT NOT NULL,
    dup           SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (site, id, ts)
) PARTITION BY RANGE (ts);
-- "values of this topic at this site over time" and the hourly averages of docs/sql.md.
CREATE INDEX message_rows_site_topic_ts ON message_rows (site, topic, ts);

CREATE VIEW messages AS
SELECT site, id, ts, topic, payload, qos, retain, dup, payload_bytes FROM message_rows;

-- The newest message per site and topic, kept by the engines as they write, so `latest` is one index
-- lookup per topic instead of a scan of every partition.
CREATE TABLE topics (
    site      TEXT   NOT NULL,
    topic     TEXT   NOT NULL,
    latest_id BIGINT NOT NULL,
    latest_ts BIGINT NOT NULL,
    PRIMARY KEY (site, topic)
);

CREATE VIEW latest AS
SELECT m.site, m.id, m.ts, m.topic, m.payload, m.qos, m.retain, m.payload_bytes
FROM topics t
JOIN message_rows m ON m.site = t.site AND m.id = t.latest_id AND m.ts = t.latest_ts;

-- Everything rules did.
CREATE TABLE actions (
    site        TEXT   NOT NULL,
    id          BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    rule        TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    target      TEXT   NOT NULL,
    value       TEXT,
    cause       TEXT,
    value_bytes BYTEA,
    PRIMARY KEY (site, id)
);
CREATE INDEX actions_site_ts ON actions (site, ts);

-- One row per rule run.
CREATE TABLE rule_runs (
    site        TEXT     NOT NULL,
    id          BIGINT   NOT NULL,
    ts          BIGINT   NOT NULL,
    rule        TEXT     NOT NULL,
    trigger     TEXT     NOT NULL,
    topic       TEXT,
    duration_us BIGINT   NOT NULL,
    error       TEXT,
    actions     BIGINT   NOT NULL DEFAULT 0,
    late        SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (site, id)
);
CREATE INDEX rule_runs_site_rule_ts ON rule_runs (site, rule, ts);

-- Rule runs name their rule, trigger and topic by integer ids (issue 7). A rule that reads every
-- message records a run per message, so this is written as fast as the history itself, and its text
-- columns (the rule, the trigger, the topic once more) made each run larger than the message behind
-- it: measured, writing the runs cost the engine a fifth of its CPU per message at full rate. The
-- owner's surface is unchanged: `rule_runs` is a view with the same columns, and DELETE on it works.

-- Each (rule, trigger) pair once. AUTOINCREMENT: an id is never given to another pair (the engine
-- keeps the ids it knows in memory).
CREATE TABLE run_kinds (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    rule    TEXT    NOT NULL,
    trigger TEXT    NOT NULL,       -- 'on_message' | 'on_start' | ...
    UNIQUE (rule, trigger)
);
INSERT INTO run_kinds (rule, trigger) SELECT DISTINCT rule, trigger FROM rule_runs ORDER BY rule, trigger;

-- A run's topic is that of a message, which is in `topics` once stored; a run recorded before its
-- message was committed (or by hand) adds the topic itself.
INSERT OR IGNORE INTO topics (topic)
SELECT DISTINCT topic FROM rule_runs WHERE topic IS NOT NULL ORDER BY topic;

-- The rows behind the `rule_runs` view.
CREATE TABLE rule_run_rows (
    id          INTEGER PRIMARY KEY,
    ts          INTEGER NOT NULL,   -- unix milliseconds, when the run started
    kind_id     INTEGER NOT NULL,   -- run_kinds.id
    topic_id    INTEGER,            -- topics.id of the message that triggered it, if any
    duration_us INTEGER NOT NULL,
    error       TEXT,               -- 'rules/NAME.rhai:LINE:COL: message' when it failed
    actions     INTEGER NOT NULL DEFAULT 0,
    late        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO rule_run_rows (id, ts, kind_id, topic_id, duration_us, error, actions, late)
SELECT r.id, r.ts, k.id, t.id, r.duration_us, r.error, r.actions, r.late
FROM rule_runs r
JOIN run_kinds k ON k.rule = r.rule AND k.trigger = r.trigger
LEFT JOIN topics t ON t.topic = r.topic
ORDER BY r.id;

DROP TABLE rule_runs;

-- "the runs of this rule over time" (`homewright why`): a few kinds, so a commit touches few pages.
CREATE INDEX rule_run_rows_kind_ts ON rule_run_rows (kind_id, ts);

-- One row per run: "why did (or didn't) it fire?" (the columns of PRODUCT.md, plus actions and late).
CREATE VIEW rule_runs AS
SELECT r.id, r.ts, k.rule, k.trigger, t.topic, r.duration_us, r.error, r.actions, r.late
FROM rule_run_rows r
JOIN run_kinds k ON k.id = r.kind_id
LEFT JOIN topics t ON t.id = r.topic_id;

CREATE TRIGGER rule_runs_delete INSTEAD OF DELETE ON rule_runs
BEGIN
    DELETE FROM rule_run_rows WHERE id = old.id;
END;

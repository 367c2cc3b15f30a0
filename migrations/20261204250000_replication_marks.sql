-- How far each table has been copied to PostgreSQL (`history.replicate`): the highest id of `messages`,
-- `actions` and `rule_runs` the server has committed. Written after the server's commit, so a crash
-- in between repeats a batch, which the server ignores (its rows are keyed by site and id). Retention
-- never deletes a row above its table's mark. Empty when replication is not configured.
CREATE TABLE replication_marks (
    tbl     TEXT    PRIMARY KEY,    -- 'messages' | 'actions' | 'rule_runs'
    last_id INTEGER NOT NULL
) WITHOUT ROWID;

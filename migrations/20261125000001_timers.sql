-- Timed rules that survive restarts (the scheduler).

-- Pending one-shot timers (`after(..)`): re-armed at start, or run once, late, when they fell due
-- while the engine was down.
CREATE TABLE timers (
    id       INTEGER PRIMARY KEY,
    rule     TEXT    NOT NULL,
    callback TEXT    NOT NULL,      -- the closure's name in the rule's compiled script
    captured TEXT,                  -- its captured values as JSON; NULL when they cannot be stored
    due      INTEGER NOT NULL,      -- unix milliseconds
    position TEXT    NOT NULL       -- LINE:COL of the after(..) call
);

-- When each recurring trigger that asked for catch-up last ran, to tell a run missed during an outage.
CREATE TABLE trigger_runs (
    rule     TEXT    NOT NULL,
    trigger  TEXT    NOT NULL,      -- e.g. 'cron 0 7 * * *#0'
    last_run INTEGER NOT NULL,      -- unix milliseconds
    PRIMARY KEY (rule, trigger)
) WITHOUT ROWID;

-- 1 when a run happened later than planned (a timer or a caught-up trigger run at start).
ALTER TABLE rule_runs ADD COLUMN late INTEGER NOT NULL DEFAULT 0;

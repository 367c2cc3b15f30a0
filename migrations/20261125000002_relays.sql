-- Relays on GPIO pins.

-- Each relay's last state: driven again at start when the relay asks to `restore`, and the pending
-- switch-off of an on_for, which must happen at its time even across a restart.
CREATE TABLE relays (
    name    TEXT PRIMARY KEY,
    is_on   INTEGER NOT NULL,
    since   INTEGER NOT NULL,       -- unix milliseconds of the last change
    off_due INTEGER                 -- unix milliseconds an on_for switches it off, if pending
) WITHOUT ROWID;

-- Why an action happened: 'rule' (rule is the rule's name), or for a relay switch also 'set_topic',
-- 'cli', 'on_for', 'max_on', 'start' or 'shutdown'.
ALTER TABLE actions ADD COLUMN cause TEXT;

-- The state of `on_held` and `on_silent` triggers per topic, so a restart neither loses a hold nor
-- repeats a firing. A row is written only when the state changes (a hold starts, ends or fires; a
-- silence fires), never per message.
CREATE TABLE topic_watches (
    rule    TEXT    NOT NULL,
    trigger TEXT    NOT NULL,      -- e.g. 'on_held sensors/+/t 600000ms anon$…#0'
    topic   TEXT    NOT NULL,
    since   INTEGER NOT NULL,      -- unix ms: when the condition became true, or the topic last spoke
    fired   INTEGER NOT NULL,      -- 1 once the trigger ran for this hold or silence
    PRIMARY KEY (rule, trigger, topic)
) WITHOUT ROWID;

-- Notifications and HTTP calls.

-- What rules asked to have delivered, kept in order until it was delivered, turned down with a 4xx answer or
-- too old (http.max_age), so that an outage or an engine restart delays it instead of losing it.
-- Empty in normal operation. A notification names its channel: the channel's secrets stay in the
-- configuration and are never written here.
CREATE TABLE deliveries (
    id      INTEGER PRIMARY KEY,        -- delivery order (per channel or host)
    ts      INTEGER NOT NULL,           -- unix milliseconds, when the rule asked
    rule    TEXT    NOT NULL,
    kind    TEXT    NOT NULL,           -- 'notify' | 'http'
    request TEXT    NOT NULL,           -- JSON: {channel, note} or {method, url, headers}
    body    BLOB    NOT NULL            -- an HTTP call's body; empty for a notification
);

-- For kind 'notify' and 'http': how the delivery ended ('sent', 'failed': a 4xx answer, or it cannot be made,
-- 'dropped': older than http.max_age) and the last HTTP status the service answered. NULL for
-- publishes and relay switches, and for what `test` and `replay` show without sending.
ALTER TABLE actions ADD COLUMN outcome TEXT;
ALTER TABLE actions ADD COLUMN status INTEGER;

-- CSV import (I12, I15, I16, I17). Run by pool.ensure_schema after schema.sql.

-- The import log (I15, I16): one row per import, derived from the import-rows facts in
-- the projection's transactions (so a rebuild restores it). Counts are of rows:
-- created, updated (matched, even if nothing changed) and failed.
-- status: running | completed | abandoned.
CREATE TABLE IF NOT EXISTS imports (
    channel_id        text NOT NULL,
    import_id         text NOT NULL,
    mode              text NOT NULL,
    key               text NOT NULL,
    blank             text NOT NULL,
    tag               text,
    actor             text NOT NULL,
    file_name         text NOT NULL,
    columns           jsonb NOT NULL,
    started_at        bigint NOT NULL,
    attempts          integer NOT NULL DEFAULT 1,
    last_actor        text NOT NULL,
    last_started_at   bigint NOT NULL,
    status            text NOT NULL DEFAULT 'running',
    rows              bigint,
    finished_at       bigint,
    finished_event_id text,
    created           bigint NOT NULL DEFAULT 0,
    updated           bigint NOT NULL DEFAULT 0,
    failed            bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, import_id)
);
-- The highest rowNumber applied (services/domain/imports.py, row_applied_before): how the
-- projection applies each row of an import once, instead of an applied_events row per row.
ALTER TABLE imports ADD COLUMN IF NOT EXISTS last_row bigint NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS imports_recent ON imports (channel_id, last_started_at DESC);

-- Failed rows (I15): downloadable for 30 days after the import finished, then deleted.
-- `cells` are the row's original texts by mapped key.
CREATE TABLE IF NOT EXISTS import_failures (
    channel_id    text NOT NULL,
    import_id     text NOT NULL,
    row_number    bigint NOT NULL,
    error_columns text[] NOT NULL,
    error_reason  text NOT NULL,
    cells         jsonb NOT NULL,
    PRIMARY KEY (channel_id, import_id, row_number)
);

-- One import at a time per channel (I12). Operational, not derived from facts: taken by
-- the importer before it publishes (refused while another holder's lease runs), kept
-- alive by its heartbeat and by the projection applying its rows, and released when the
-- projection applies the attempt's import.finished (`release_event`). A killed importer
-- stops renewing it, so its lease runs out. Times are the database's clock, the one
-- clock every importer shares.
CREATE TABLE IF NOT EXISTS import_locks (
    channel_id    text PRIMARY KEY,
    import_id     text NOT NULL,
    owner         text NOT NULL,
    actor         text NOT NULL,
    release_event text NOT NULL,
    published     bigint NOT NULL DEFAULT 0,
    lease_ms      bigint NOT NULL,
    lease_until   timestamptz NOT NULL,
    acquired_at   timestamptz NOT NULL DEFAULT now()
);

-- I17: visible MU per channel, counted for channels with an MU limit while they import.
CREATE INDEX IF NOT EXISTS users_visible_mu ON users (channel_id)
    WHERE type <> 'anonymous' AND NOT deleted AND merged_into IS NULL AND NOT blocked AND NOT masked;

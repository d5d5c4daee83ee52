-- External lookups (seed 004 §2; services/lookup, docs/lookups.md).

-- Definitions per channel: facts (lookup.define / lookup.remove), written by the
-- projection with the batch, rebuilt by replay, covered by the digest. The payload key
-- of an encrypted lookup is only ever stored wrapped under the service's KEK.
CREATE TABLE IF NOT EXISTS lookups (
    channel_id text NOT NULL,
    name       text NOT NULL,
    definition jsonb NOT NULL,
    PRIMARY KEY (channel_id, name)
);
-- A GIN index would serve `medium = ANY(media)`; channels hold a handful of lookups,
-- so the primary key's channel prefix is enough.

-- What automatic lookups brought back (lookup.result facts): shown on the customer.
CREATE TABLE IF NOT EXISTS lookup_results (
    channel_id  text NOT NULL,
    event_id    text NOT NULL,
    user_id     text NOT NULL,
    name        text NOT NULL,
    occurred_at bigint NOT NULL,
    record      jsonb NOT NULL,
    PRIMARY KEY (channel_id, event_id)
);
CREATE INDEX IF NOT EXISTS lookup_results_user ON lookup_results (user_id, occurred_at DESC);

-- Automatic lookups to run: written by the live projection in its transaction when a
-- chat arrives from a medium linked to a definition, taken by the lookup worker
-- (services/lookup/worker.py), which calls the company outside any transaction and
-- publishes the answer as a `lookup.result` command. Operational (not rebuilt by a
-- replay, whose chats were looked up when they happened; carried over by the switch).
CREATE TABLE IF NOT EXISTS lookup_queue (
    channel_id text NOT NULL,
    event_id   text NOT NULL,  -- the chat's
    name       text NOT NULL,
    user_id    text NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    due_at     timestamptz NOT NULL DEFAULT now(),  -- a lease: taken rows are due again if the worker dies
    PRIMARY KEY (channel_id, event_id, name)
);
CREATE INDEX IF NOT EXISTS lookup_queue_due ON lookup_queue (due_at);

-- Tables of the operators' tools, not derived from facts (replay carries them over:
-- services/replay/switch.py, OPERATIONAL). Run by pool.ensure_schema after schema.sql.

-- Outbox messages the broker refused for good (too large for it, or another error about
-- the record itself): moved here by the relay so the rest goes on. Listed and put back
-- into the outbox by `unifier outbox parked list|retry` (docs/operations.md).
CREATE TABLE IF NOT EXISTS outbox_parked (
    id        bigint PRIMARY KEY,    -- its outbox id
    topic     text NOT NULL,
    key       text,
    value     bytea,
    code      text NOT NULL,         -- message_too_large | the broker's error name
    reason    text NOT NULL,
    parked_at timestamptz NOT NULL DEFAULT now()
);

-- Dead letters already re-published by `unifier dead-letters retry`, by where they sit
-- on the dead-letter topic: each letter is retried at most once, so retrying again never
-- doubles anything (a letter that fails again is a new letter, at a new offset).
CREATE TABLE IF NOT EXISTS dead_letter_retries (
    topic      text NOT NULL,        -- the dead-letter topic
    partition  integer NOT NULL,
    "offset"   bigint NOT NULL,
    retried_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);

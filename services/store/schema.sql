-- Unifier state. Every table lives in one schema (UNIFIER_DB_SCHEMA) so that a
-- replay can build a fresh schema beside the live one and switch over.

-- One row per user ever created (T1: channel_id on every row). `state` is the domain's
-- User as JSON; the other columns are derived from it for queries and constraints.
-- `state` is the JSON text as the service wrote it (`User.state_json`), stored as text:
-- the service reads and writes it whole and never asks PostgreSQL to look inside on a
-- hot path. Not jsonb: converting to and from it cost PostgreSQL ~25 µs per row written
-- and ~25 per row read (of a batch's ~70 µs of SQL per user). Not json either: json
-- parses every value it takes in to check it, ~2–4 µs of a ~1.3 KB state, on every
-- user a batch writes (issue 14, session 20), for text only the service writes. The
-- rare query inside it casts: `state::json ->> 'key'`.
-- `rev` is the optimistic-concurrency fence: a batch writes a user only if the row
-- is still at the revision it loaded (G3: two instances never overwrite each other).
CREATE TABLE IF NOT EXISTS users (
    id           text PRIMARY KEY,
    channel_id   text NOT NULL,
    rev          bigint NOT NULL,
    type         text NOT NULL,
    member_id    text,
    merged_into  text,
    deleted      boolean NOT NULL,
    blocked      boolean NOT NULL,
    masked       boolean NOT NULL,
    last_seen_at bigint,
    updated_at   bigint NOT NULL,
    state        text NOT NULL,
    -- What staff search by (repository.search_columns): columns of their own, because
    -- an index over `state` would make every update of a user a non-HOT one.
    name_key     text,
    tags         text[] NOT NULL DEFAULT '{}'
);
-- No index on channel_id alone: every read of a channel's users is of its live ones
-- (users_listing, users_visible_mu); `users_channel` cost every new user and every
-- non-HOT update an entry no read used (issue 14, session 14). Dropped where it exists.
DROP INDEX IF EXISTS users_channel;
-- Every batch rewrites the users it changes, usually only columns no index covers
-- (rev, last_seen_at, state): room left in each page lets PostgreSQL put the new
-- version beside the old one (a HOT update: no new index entries, no page elsewhere).
-- Applies to pages written from now on; an existing table gets it as it is rewritten.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'users'::regclass
                      AND 'fillfactor=70' = ANY(coalesce(reloptions, '{}'))) THEN
        ALTER TABLE users SET (fillfactor = 70);
    END IF;
END $$;

-- Schemas from before name_key/tags (contract 1.1.0): add and fill the columns once, then
-- drop the expression indexes over `state` they replace. Python fills them on every
-- write from now on; the fill here lowercases with PostgreSQL's lower(), which differs
-- from Python's only for some non-ASCII letters under a C locale (search only; a user's
-- next change or a rebuild writes Python's). A name holding an escaped U+0000 cannot be
-- unescaped to text and is left unsearchable until then.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'users'
                      AND column_name = 'name_key') THEN
        ALTER TABLE users ADD COLUMN name_key text, ADD COLUMN tags text[] NOT NULL DEFAULT '{}';
        UPDATE users SET
            name_key = CASE WHEN json_typeof(state::json->'fields'->'name'->0) = 'string'
                             AND strpos((state::json->'fields'->'name'->0)::text, '\u0000') = 0
                            THEN lower(state::json->'fields'->'name'->>0) END,
            tags = ARRAY(SELECT json_array_elements_text(coalesce(state::json->'tags', '[]'::json)));
    END IF;
    DROP INDEX IF EXISTS users_name_prefix;
    DROP INDEX IF EXISTS users_tags;
END $$;

-- Schemas created while `state` was jsonb or json: convert once (rewrites the table,
-- under the migration lock of ensure_schema; docs/operations.md, "Upgrading"), after
-- the block above dropped the indexes over `state`, which text could not carry. A json
-- state keeps its text byte for byte; a jsonb one takes jsonb's own text, which the
-- digest reads as it reads any state not in the sorted form (replay/digest.py).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = 'users'
                  AND column_name = 'state' AND data_type IN ('json', 'jsonb')) THEN
        ALTER TABLE users ALTER COLUMN state TYPE text USING state::text;
    END IF;
END $$;

-- How facts find users: veils, member ids, contacts (with their qualification) and
-- pending unifications (kind 'pending', value = target member id). Derived from
-- users.state; rewritten with the user. A veil or member id has one live owner per
-- channel: the unique index is the last line of defence against a racing instance.
-- `value` collates as "C" (byte order; equality is byte equality under any collation):
-- the primary key then serves `q`'s prefix of an e-mail or phone number (`value LIKE
-- 'abc%'` is a range of it), which needed an index of its own, an entry every contact
-- row (identities_contact_prefix, text_pattern_ops), and its comparisons are memcmp
-- whatever the database's collation (issue 14, session 14).
CREATE TABLE IF NOT EXISTS identities (
    channel_id text NOT NULL,
    kind       text NOT NULL,
    value      text COLLATE "C" NOT NULL,
    user_id    text NOT NULL,
    qualified  boolean NOT NULL,
    PRIMARY KEY (channel_id, kind, value, user_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS identities_one_owner
    ON identities (channel_id, kind, value) WHERE kind IN ('veil', 'member');
-- No index on user_id: the rows stored for a user are exactly `identities` of its stored
-- state (written together, fenced by `rev`), so a batch deletes the rows it knows it had
-- by the key, and the reads find a user's own keys in its users row (member_id, state).
-- `identities_user` cost each identity row an entry (~6 µs of PostgreSQL an imported
-- member) for reads by user id that no longer exist (docs/decisions.md, "Issue 14,
-- session 21"). Dropped where it exists.
DROP INDEX IF EXISTS identities_user;
-- Older tables: `value` under the database's collation, and the prefix index beside the
-- key. The index goes first, then the column takes "C": no table rewrite (a collation
-- is not a new type), the key and identities_one_owner are built again, under the
-- migration lock (docs/operations.md, "Upgrading").
DROP INDEX IF EXISTS identities_contact_prefix;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
                WHERE a.attrelid = 'identities'::regclass AND a.attname = 'value' AND c.collname <> 'C') THEN
        ALTER TABLE identities ALTER COLUMN value TYPE text COLLATE "C";
    END IF;
END $$;

-- The inbox: the next offset to apply per inbound partition, committed with the state
-- it produced (Kafka's own commits are only a hint), and the eventIds applied.
CREATE TABLE IF NOT EXISTS inbox_offsets (
    topic       text NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (topic, partition)
);
-- Columns added after a table was first created are added only when missing: `ALTER
-- TABLE … ADD COLUMN IF NOT EXISTS` takes an exclusive lock on the table even when the
-- column exists, so every start of an instance blocked the others' batches (and a
-- start could deadlock with a session holding a lock on the table).
-- The partition's clock at next_offset: the highest bounded record timestamp before it
-- (projection/records.PartitionClocks), so a restart bounds timestamps as a rebuild does.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'inbox_offsets' AND column_name = 'clock') THEN
        ALTER TABLE inbox_offsets ADD COLUMN IF NOT EXISTS clock bigint;
    END IF;
END $$;
-- The eventId window (projection/window.py): the pairs applied, each with its event time
-- `at`; rows more than the window behind their channel's clock (applied_clocks) are
-- ignored, and deleted by the channel's next sweep. Keyed by `k`, a bigint made from the
-- pair by the server (repository.applied_key: the channel's hashtext in the high half,
-- the eventId's in the low half), then the pair itself, which settles the rare equal
-- keys: a btree step compares one integer instead of two texts under the database's
-- collation (issue 14, session 13), and a channel's rows are one range of keys.
CREATE TABLE IF NOT EXISTS applied_events (
    channel_id text NOT NULL,
    event_id   text NOT NULL,
    at         bigint NOT NULL,
    k          bigint GENERATED ALWAYS AS ((hashtext(channel_id)::bigint << 32) | (hashtext(event_id)::bigint & 4294967295)) STORED,
    PRIMARY KEY (k, channel_id, event_id)
);
-- Older tables: `at` came later (rows stored before it get 0), and the key was
-- (channel_id, event_id) until session 13; adding `k` rewrites the table and the new key
-- is built once, under the migration lock (docs/operations.md, "Upgrading").
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'applied_events' AND column_name = 'at') THEN
        ALTER TABLE applied_events ADD COLUMN IF NOT EXISTS at bigint NOT NULL DEFAULT 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'applied_events' AND column_name = 'k') THEN
        ALTER TABLE applied_events
            ADD COLUMN k bigint GENERATED ALWAYS AS ((hashtext(channel_id)::bigint << 32) | (hashtext(event_id)::bigint & 4294967295)) STORED,
            DROP CONSTRAINT applied_events_pkey;
        ALTER TABLE applied_events ADD CONSTRAINT applied_events_pkey PRIMARY KEY (k, channel_id, event_id);
    END IF;
END $$;
-- Each channel's clock, the latest event time applied in it (window.py), raised by the
-- batch that applies a later fact, and where its rows were last swept: the batch that
-- raises the clock WINDOW_MS/2 past `swept` deletes the channel's rows out of the window
-- (repository.raise_clocks). Between two sweeps the expired rows stay, ignored by the
-- rule (AppliedWindow.seen), so `applied_events` holds at most ~3/2 of a window of each
-- channel, without an index on event time (issue 14, session 12: ~6 µs of PostgreSQL
-- an event less than that index with max(at) as the clock and forgetting in each batch).
CREATE TABLE IF NOT EXISTS applied_clocks (
    channel_id text PRIMARY KEY,
    clock      bigint NOT NULL,
    swept      bigint NOT NULL
);
-- Upgrade from the index on (channel_id, at): each channel's clock was max(at), read
-- through it; fill the clocks from it once, then drop it. Instances of the older
-- version neither read nor raise these clocks: stop them first (docs/operations.md).
DO $$
BEGIN
    IF to_regclass('applied_events_clock') IS NOT NULL THEN
        INSERT INTO applied_clocks (channel_id, clock, swept)
            SELECT channel_id, max(at), min(at) FROM applied_events GROUP BY channel_id
            ON CONFLICT (channel_id) DO UPDATE SET clock = greatest(applied_clocks.clock, EXCLUDED.clock);
        DROP INDEX applied_events_clock;
    END IF;
END $$;

-- The channel fence of resident users (services/projection/resident.py): each batch
-- locks its channels' rows before it reads users, and a batch that writes a channel's
-- users stamps its row with its transaction id (xid8: never reused in the cluster). An
-- instance whose last stamp is no longer there knows someone else wrote the channel and
-- drops what it holds in memory. Not copied by a replay: a rebuild writes a row of
-- token 0 for each channel it holds users of (replay/rebuild.py), so after a switch no
-- row names a live instance's transaction and every resident copy is dropped.
-- A channel with a user in `users` has a row here: every transaction that writes users
-- locks its channels' rows, inserting the missing ones (repository.lock_channels_held),
-- a rebuild writes them as said, and schemas older than that rule get them below. So a
-- channel without a row has no users, and an instance that finds none may answer that
-- channel's lookups from memory (resident.py, fresh channels; issue 14, session 23).
CREATE TABLE IF NOT EXISTS channel_writers (
    channel_id text PRIMARY KEY,
    token      bigint NOT NULL
);
INSERT INTO channel_writers (channel_id, token)
SELECT DISTINCT channel_id, 0 FROM users
 WHERE NOT EXISTS (SELECT 1 FROM channel_writers w WHERE w.channel_id = users.channel_id)
ON CONFLICT DO NOTHING;

-- The outbox: what the relay publishes, in id order. A NULL value is a tombstone. Dead
-- letters go through it too, so they are as crash-safe as state. A row is one message
-- (key, value; n = 1: rows of versions before issue 14 session 14, and parked messages
-- put back) or a pack of n messages of one topic, in order (keys[i], vals[i]; key and
-- value NULL): the projection writes one pack per batch and topic, one statement, and
-- the relay deletes a pack once the broker took all of it (docs/decisions.md, "Issue 14,
-- session 14: the outbox in packs").
CREATE TABLE IF NOT EXISTS outbox (
    id    bigserial PRIMARY KEY,
    topic text NOT NULL,
    key   text,
    value bytea,
    n     integer NOT NULL DEFAULT 1,
    keys  text[],
    vals  bytea[]
);
-- Upgrade: the pack columns added when missing (existing rows are single messages, n = 1,
-- and are relayed as before). A pack's keys and values are stored compressed with lz4
-- where the server has it (the messages of a pack share most of their bytes: ~8x
-- smaller, and PostgreSQL's CPU a message about halved), else uncompressed: pglz, the
-- default, costs more CPU than it saves. Checked first, so a normal start takes no lock on the outbox.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'outbox' AND column_name = 'vals') THEN
        ALTER TABLE outbox ADD COLUMN IF NOT EXISTS n integer NOT NULL DEFAULT 1,
                           ADD COLUMN IF NOT EXISTS keys text[], ADD COLUMN IF NOT EXISTS vals bytea[];
    END IF;
    IF (SELECT count(*) FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attname IN ('keys', 'vals')
        AND (attcompression = 'l' OR attstorage = 'e')) < 2 THEN
        BEGIN
            ALTER TABLE outbox ALTER COLUMN keys SET COMPRESSION lz4, ALTER COLUMN vals SET COMPRESSION lz4;
        EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
            ALTER TABLE outbox ALTER COLUMN keys SET STORAGE EXTERNAL, ALTER COLUMN vals SET STORAGE EXTERNAL;
        END;
    END IF;
END
$$;

-- The outbox message by message, whatever the rows (for operators and tests; the relay
-- reads the rows): `SELECT topic, key, value FROM outbox_messages ORDER BY id, ordinal`.
CREATE OR REPLACE VIEW outbox_messages AS
    SELECT o.id, m.ordinal, o.topic, m.key, m.value
    FROM outbox o CROSS JOIN LATERAL unnest(
        CASE WHEN o.keys IS NULL THEN ARRAY[o.key] ELSE o.keys END,
        CASE WHEN o.keys IS NULL THEN ARRAY[o.value] ELSE o.vals END) WITH ORDINALITY AS m(key, value, ordinal);

-- The relay LISTENs on unifier_outbox: whatever statement fills the outbox wakes it at
-- commit (a NOTIFY is delivered then, once per transaction), with no round trip of its
-- own for the writer (docs/decisions.md, "Issue 14, session 9: latency").
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('unifier_outbox', '');
    RETURN NULL;
END
$$;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'outbox_notify' AND tgrelid = 'outbox'::regclass) THEN
        CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
    END IF;
END
$$;

-- G4: every merge, with the winner of every contested key. Survives the source.
CREATE TABLE IF NOT EXISTS merges (
    channel_id   text NOT NULL,
    source_id    text NOT NULL,
    target_id    text NOT NULL,
    causation_id text NOT NULL,
    occurred_at  bigint NOT NULL,
    contested    jsonb NOT NULL,
    PRIMARY KEY (channel_id, source_id)
);

-- Chats and behaviour events (U4): re-pointed to the survivor when users merge.
CREATE TABLE IF NOT EXISTS activities (
    channel_id  text NOT NULL,
    event_id    text NOT NULL,
    user_id     text NOT NULL,
    kind        text NOT NULL,
    occurred_at bigint NOT NULL,
    body        jsonb NOT NULL,
    PRIMARY KEY (channel_id, event_id)
);
-- A user's activities are found through activities_user_recent (user_id first): the
-- list, the merge's re-pointing (U4) and erasure (B2). `activities_user` (user_id) was
-- the same prefix again, an entry a row no read needed (issue 14, session 14).
DROP INDEX IF EXISTS activities_user;

-- Grades (D2): staff-defined labels held by keys (an e-mail, a mobile number in E.164,
-- a memberId), not by users, so a customer shows the grades of the keys it holds after
-- merges and imports too (services/store/queries.grades_of). Facts: written by the
-- projection with the batch, rebuilt by replay, covered by the digest.
CREATE TABLE IF NOT EXISTS grades (
    channel_id text NOT NULL,
    name       text NOT NULL,
    colour     text NOT NULL,
    PRIMARY KEY (channel_id, name)
);
CREATE TABLE IF NOT EXISTS grade_holders (
    channel_id text NOT NULL,
    name       text NOT NULL,
    kind       text NOT NULL,  -- email | mobileNumber | memberId
    value      text NOT NULL,
    PRIMARY KEY (channel_id, name, kind, value)
);
CREATE INDEX IF NOT EXISTS grade_holders_key ON grade_holders (channel_id, kind, value);

-- Channel settings (H1 secret, I17 MU limit, P2 field types): configuration set by
-- `unifier channel configure`, read by every batch. `imported_types` are the profile
-- types CSV imports declared (I5): facts, not configuration, so a rebuild declares
-- them again as it replays the imports instead of copying them. A batch validates with
-- both, the configured type winning (`imported_types || field_types`).
CREATE TABLE IF NOT EXISTS channels (
    channel_id         text PRIMARY KEY,
    member_hash_secret text,
    mu_limit           integer,
    field_types        jsonb NOT NULL DEFAULT '{}'
);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name = 'channels' AND column_name = 'imported_types') THEN
        ALTER TABLE channels ADD COLUMN IF NOT EXISTS imported_types jsonb NOT NULL DEFAULT '{}';
    END IF;
END $$;

-- Small facts about this schema's surroundings, e.g. which in-memory log of the
-- embedded broker its inbox offsets refer to.
CREATE TABLE IF NOT EXISTS meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- What became of each command of identity.commands (services/store/outcomes.py): applied
-- (code NULL) or rejected with its dead letter's code and reason, written in the batch's
-- transaction, so the HTTP API answers "applied" or "rejected, because …" long after
-- the eventId window (7 days) and the dead letter are gone. Kept 90 days of each
-- channel's command time (pruned by the batches). Derived from facts like the rest (a
-- rebuild writes it too); not in the digest, which covers users and merges.
CREATE TABLE IF NOT EXISTS command_outcomes (
    channel_id text NOT NULL,
    event_id   text NOT NULL,
    at         bigint NOT NULL,
    code       text,
    message    text,
    PRIMARY KEY (channel_id, event_id)
);
CREATE INDEX IF NOT EXISTS command_outcomes_clock ON command_outcomes (channel_id, at);
-- Before 2026-12 only rejections were kept, in rejected_commands, without a time: they
-- move here stamped with their channel's clock (so they live another 90 days).
DO $$
BEGIN
    IF to_regclass('rejected_commands') IS NOT NULL THEN
        INSERT INTO command_outcomes (channel_id, event_id, at, code, message)
        SELECT r.channel_id, r.event_id, coalesce(a.clock, 0), r.code, r.message
          FROM rejected_commands r
          LEFT JOIN (SELECT channel_id, max(at) AS clock FROM applied_events GROUP BY channel_id) a
                 ON a.channel_id = r.channel_id
        ON CONFLICT DO NOTHING;
        DROP TABLE rejected_commands;
    END IF;
END $$;

-- API keys (docs/contract.md, "HTTP API"). Operational, not derived from facts: carried
-- over by a replay's switch (services/replay/switch.py OPERATIONAL). Only the sha256 of
-- the key is kept; `key_id` is the key's public prefix, found first, then the hash is
-- compared in constant time.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id     text PRIMARY KEY,
    name       text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    channel_id text,
    key_sha256 bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Read-side indexes of the HTTP API (EXPLAINed in docs/decisions.md, "HTTP API").
-- The user list: live users of a channel in id order (keyset pagination).
CREATE INDEX IF NOT EXISTS users_listing ON users (channel_id, id) WHERE NOT deleted AND merged_into IS NULL;
CREATE INDEX IF NOT EXISTS users_blocked ON users (channel_id, id) WHERE blocked AND NOT deleted AND merged_into IS NULL;
-- `q`: prefix of a name (case-insensitive), of an e-mail or of a phone number.
-- text_pattern_ops: LIKE 'abc%' uses the index whatever the database's collation.
-- Only users with a name: `name_key LIKE …` implies it (the planner proves a strict
-- operator's argument is not null), and the anonymous users, most of a channel, cost
-- no entry (issue 14, session 14; older schemas had the index without `name_key IS NOT
-- NULL`: made again once).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('users_name_key_prefix')
                  AND pg_get_expr(indpred, indrelid) NOT LIKE '%name_key IS NOT NULL%') THEN
        DROP INDEX users_name_key_prefix;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS users_name_key_prefix ON users (channel_id, name_key text_pattern_ops)
    WHERE NOT deleted AND merged_into IS NULL AND name_key IS NOT NULL;
-- (An e-mail or phone prefix is a range of identities' primary key: `value` collates as "C".)
-- `tag=`: staff tags. Only users with tags: a GIN entry stands for an empty array too,
-- one a user without tags (most of them) for nothing; the reads name the same
-- `tags <> '{}'` so that the planner may use it (queries.tag_matches_sql; issue 14,
-- session 14; older schemas had the index without it: made again once).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('users_tag_list')
                  AND pg_get_expr(indpred, indrelid) NOT LIKE '%tags <> %') THEN
        DROP INDEX users_tag_list;
    END IF;
END $$;
CREATE INDEX IF NOT EXISTS users_tag_list ON users USING gin (tags)
    WHERE NOT deleted AND merged_into IS NULL AND tags <> '{}'::text[];
-- Activities newest first, and the merges into a user (G4).
CREATE INDEX IF NOT EXISTS activities_user_recent ON activities (user_id, occurred_at DESC, event_id DESC);
CREATE INDEX IF NOT EXISTS merges_target ON merges (channel_id, target_id);

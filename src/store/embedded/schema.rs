//! The embedded store's SQLite schema, as ordered migrations.

/// Applied in order; never edit a released migration, append a new one.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    login         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
    display_name  TEXT,
    password_hash TEXT NOT NULL,
    quota_bytes   INTEGER,                -- NULL: no quota
    used_bytes    INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);

-- Further addresses a user receives mail at and may log in with.
CREATE TABLE aliases (
    address    TEXT PRIMARY KEY COLLATE NOCASE,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE
);

CREATE TABLE folders (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    parent_id      INTEGER NOT NULL DEFAULT 0,   -- 0: top level
    name           TEXT NOT NULL,
    role           TEXT,                         -- special use: inbox, drafts, sent, trash, junk, archive
    uidvalidity    INTEGER NOT NULL,
    uidnext        INTEGER NOT NULL DEFAULT 1,
    highest_modseq INTEGER NOT NULL DEFAULT 1,
    messages       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, parent_id, name)
);

-- Raw RFC 5322 bytes, immutable once written; shared by a message and, after expunge, its
-- retained copy.
CREATE TABLE bodies (
    id  INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);

CREATE TABLE messages (
    folder_id     INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid           INTEGER NOT NULL,
    modseq        INTEGER NOT NULL,
    flags         INTEGER NOT NULL DEFAULT 0,
    keywords      TEXT NOT NULL DEFAULT '',      -- space separated, sorted
    internal_date INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    body_id       INTEGER NOT NULL REFERENCES bodies(id),
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX messages_by_modseq ON messages(folder_id, modseq);
CREATE INDEX messages_by_date ON messages(folder_id, internal_date);
CREATE INDEX messages_by_body ON messages(body_id);

-- Expunged UIDs with the MODSEQ of their expunge (QRESYNC's VANISHED).
CREATE TABLE vanished (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid       INTEGER NOT NULL,
    modseq    INTEGER NOT NULL,
    PRIMARY KEY (folder_id, uid)
) WITHOUT ROWID;
CREATE INDEX vanished_by_modseq ON vanished(folder_id, modseq);

-- Deleted-items retention: expunged messages kept recoverable for a while.
CREATE TABLE retained (
    id            INTEGER PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    folder_id     INTEGER NOT NULL,              -- where it was (may no longer exist)
    folder_name   TEXT NOT NULL,
    flags         INTEGER NOT NULL,
    keywords      TEXT NOT NULL,
    internal_date INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    body_id       INTEGER NOT NULL REFERENCES bodies(id),
    expunged_at   INTEGER NOT NULL
);
CREATE INDEX retained_by_account ON retained(account_id, expunged_at);
CREATE INDEX retained_by_age ON retained(expunged_at);
CREATE INDEX retained_by_body ON retained(body_id);

-- Full-text index of subject, addresses and body text, keyed by body id.
CREATE VIRTUAL TABLE body_text USING fts5(subject, addresses, body, content='', contentless_delete=1);
"#];

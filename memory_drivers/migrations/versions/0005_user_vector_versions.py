"""memories: a version per user that every change to the user's vectors bumps, and a log of
the changed memories (PostgreSQL)

The pgvector driver may keep a user's vectors in the client and score them there (its vector
cache, docs/drivers/pgvector.md). A cached copy is used only while the user's version in
``memory_user_versions`` is the one it was read with, checked in the same statement that reads
the winning rows, so a write by any process (or by hand, in SQL) is seen at once; a copy found
behind reads only the memories ``memory_vector_changes`` names for the versions it missed.

Triggers on ``memories`` keep both: an INSERT or DELETE statement bumps every user it touched
and logs the pks it touched (one row per user and version, the pks in an array); an UPDATE of
a row's ``embedding`` or ``user_id`` does the same for that row (rewriting keyword terms, tags
or content leaves the cached vectors right and fires nothing); a TRUNCATE bumps every user and
logs nothing (a copy that finds a version missing from the log is read again whole). Users are
bumped in ``user_id`` order, so two statements over the same users take their row locks in one
order; a writer holds its users' version rows until it commits, so writers of one user commit
in version order and a snapshot that sees version v sees every change up to v. The log keeps the
last ``KEEP_VERSIONS`` versions of each user.

Existing users get version 1. Nothing on SQLite (its index is kept in step with the database
by the vector log).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: Log entries kept per user: a copy more versions behind is read again whole.
KEEP_VERSIONS = 100

_LOG = """
    WITH touched AS ({users}),
    bumped AS (
        INSERT INTO memory_user_versions AS v (user_id, version)
        SELECT DISTINCT user_id, 1 FROM touched ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE SET version = v.version + 1
        RETURNING v.user_id, v.version),
    logged AS (
        INSERT INTO memory_vector_changes (user_id, version, pks)
        SELECT t.user_id, b.version, array_agg(t.pk) FROM touched t JOIN bumped b USING (user_id)
        GROUP BY t.user_id, b.version)
    DELETE FROM memory_vector_changes c USING bumped b
    WHERE c.user_id = b.user_id AND c.version <= b.version - {keep}"""

#: The update trigger's guard: nothing to do unless the vector or the owner changed.
_CHANGED = """
    IF OLD.embedding IS NOT DISTINCT FROM NEW.embedding AND OLD.user_id = NEW.user_id THEN
        RETURN NULL;
    END IF;"""

_FUNCTION = """CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{body};
    RETURN NULL;
END $$"""

#: (function and trigger, when it fires, the (user, memory) pairs it changed). INSERT and
#: DELETE fire once per statement, with the statement's rows as a transition table. UPDATE
#: fires per row and logs only a row whose vector or owner changed: a statement-level UPDATE
#: trigger would copy both versions of every row of the frequent updates that rewrite keyword
#: terms (each store rewrites its neighbours'), and a trigger that names ``embedding`` (a
#: column list, a WHEN) would forbid the ALTER TYPE of a re-embedding to a new dimension.
TRIGGERS = (
    (
        "memory_versions_insert",
        "AFTER INSERT ON memories REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
        "SELECT user_id, pk FROM new_rows",
    ),
    (
        "memory_versions_delete",
        "AFTER DELETE ON memories REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
        "SELECT user_id, pk FROM old_rows",
    ),
    (
        "memory_versions_update",
        "AFTER UPDATE ON memories FOR EACH ROW",
        "SELECT OLD.user_id AS user_id, OLD.pk AS pk UNION SELECT NEW.user_id, NEW.pk",
    ),
)

POSTGRES_UP = [
    """CREATE TABLE memory_user_versions (
        user_id VARCHAR(255) PRIMARY KEY,
        version BIGINT NOT NULL)""",
    """CREATE TABLE memory_vector_changes (
        user_id VARCHAR(255) NOT NULL,
        version BIGINT NOT NULL,
        pks BIGINT[] NOT NULL,
        PRIMARY KEY (user_id, version))""",
    "INSERT INTO memory_user_versions (user_id, version) SELECT DISTINCT user_id, 1 FROM memories",
    *(
        _FUNCTION.format(
            name=name,
            body=(_CHANGED if name == "memory_versions_update" else "")
            + _LOG.format(users=users, keep=KEEP_VERSIONS),
        )
        for name, _, users in TRIGGERS
    ),
    *(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {name}()" for name, when, _ in TRIGGERS),
    # No log entries: the gap makes every copy read again whole.
    _FUNCTION.format(
        name="memory_versions_truncate",
        body="\n    UPDATE memory_user_versions SET version = version + 1",
    ),
    "CREATE TRIGGER memory_versions_truncate AFTER TRUNCATE ON memories "
    "FOR EACH STATEMENT EXECUTE FUNCTION memory_versions_truncate()",
]

POSTGRES_DOWN = [
    *(
        f"DROP TRIGGER IF EXISTS {name} ON memories"
        for name in [t[0] for t in TRIGGERS] + ["memory_versions_truncate"]
    ),
    *(
        f"DROP FUNCTION IF EXISTS {name}()"
        for name in [t[0] for t in TRIGGERS] + ["memory_versions_truncate"]
    ),
    "DROP TABLE IF EXISTS memory_vector_changes",
    "DROP TABLE IF EXISTS memory_user_versions",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_DOWN:
            op.execute(statement)

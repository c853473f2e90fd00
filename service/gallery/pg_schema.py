"""The PostgreSQL gallery's schema: versioned migrations, run once under an advisory lock,
and the model binding.

    gallery_meta        one row: model_sha256, model_id, dim, item_count (kept exact in the
                        transaction of every insert and delete: `len()` reads one row)
    gallery_images      image_id, ext, sha256, data (bytea): one row per `add` item, one per
                        `add_vectors` call (its rows share it), removed with its last item
    gallery_items       seq (identity: insertion order), id, label, metadata (jsonb),
                        created_at, image_id, vector (vector(dim)), reduced (vector(256):
                        NULL until a projection exists, then filled for every row)
    gallery_projection  the PCA projection of `pg_projection` (mean and components as
                        bytea); at most one row, the one `reduced` was made with
    schema_migrations   the versions applied

Every replica opening the database runs `migrate` at open: it takes a transaction-scoped
advisory lock first, so replicas starting at once apply each migration exactly once.
"""

from __future__ import annotations

import psycopg

from service.gallery.items import GalleryModelMismatchError, ModelBinding

REDUCED_DIM = 256  # pgvector's HNSW indexes at most 2,000 float dimensions, not 4096

# pg_advisory_xact_lock(LOCK_SPACE, key): one key per purpose (two int4: no clash with
# another application's single bigint keys in practice).
LOCK_SPACE = 0x616C6578  # "alex"
MIGRATION_LOCK = 1
PROJECTION_LOCK = 2  # shared: inserts, deletes; exclusive: a projection made, vectors replaced

# (version, what it does, statements); `{dim}` is the vector length of the first opener,
# `{reduced}` REDUCED_DIM.
MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "the gallery: meta, images, items, projection",
        [
            "CREATE EXTENSION IF NOT EXISTS vector",
            """CREATE TABLE gallery_meta (
                one boolean PRIMARY KEY DEFAULT true CHECK (one),
                model_sha256 text NOT NULL,
                model_id text NOT NULL,
                dim integer NOT NULL,
                item_count bigint NOT NULL DEFAULT 0 CHECK (item_count >= 0)
            )""",
            """CREATE TABLE gallery_images (
                image_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                ext text NOT NULL,
                sha256 text NOT NULL,
                data bytea NOT NULL
            )""",
            # Images and full vectors do not compress (JPEG, float noise): store them out of
            # line without trying.
            "ALTER TABLE gallery_images ALTER COLUMN data SET STORAGE EXTERNAL",
            """CREATE TABLE gallery_items (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id text NOT NULL UNIQUE CHECK (id ~ '^[0-9a-f]{{32}}$'),
                label text,
                metadata jsonb NOT NULL,
                created_at text,
                image_id bigint NOT NULL REFERENCES gallery_images (image_id),
                vector vector({dim}) NOT NULL,
                reduced vector({reduced})
            )""",
            "ALTER TABLE gallery_items ALTER COLUMN vector SET STORAGE EXTERNAL",
            "CREATE INDEX gallery_items_image_id ON gallery_items (image_id)",
            """CREATE TABLE gallery_projection (
                projection_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                model_sha256 text NOT NULL,
                sample_size integer NOT NULL,
                mean bytea NOT NULL,
                components bytea NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )""",
        ],
    ),
]
LATEST = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection, dim: int) -> list[int]:
    """Apply the migrations this database lacks, in order, in the caller's transaction,
    after taking the migration lock (held until that transaction ends); the versions
    applied.

    Raises:
        RuntimeError: the database has a newer schema than this code knows.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, MIGRATION_LOCK))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, description text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
    if done and max(done) > LATEST:
        raise RuntimeError(
            f"the gallery database has schema version {max(done)}, newer than this code's "
            f"{LATEST}: upgrade the service"
        )
    applied = []
    for version, description, statements in MIGRATIONS:
        if version in done:
            continue
        for statement in statements:
            conn.execute(statement.format(dim=int(dim), reduced=REDUCED_DIM))
        conn.execute(
            "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
            (version, description),
        )
        applied.append(version)
    return applied


def read_binding(conn: psycopg.Connection) -> ModelBinding | None:
    """The model recorded in the database, or None (no gallery schema or no binding yet)."""
    exists = conn.execute("SELECT to_regclass('gallery_meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT model_id, model_sha256, dim FROM gallery_meta").fetchone()
    return None if row is None else ModelBinding(row[0], row[1], int(row[2]))


def bind_model(conn: psycopg.Connection, wanted: ModelBinding, location: str) -> None:
    """Record `wanted` in a new gallery; in an existing one, check that it is the model
    recorded (the same file under another name is recorded under the new name). Runs in the
    caller's transaction, after `migrate` (under its lock).

    Raises:
        GalleryModelMismatchError: the gallery holds vectors of another model.
        ValueError: it holds vectors of another length.
    """
    stored = read_binding(conn)
    if stored is None:
        conn.execute(
            "INSERT INTO gallery_meta (model_sha256, model_id, dim) VALUES (%s, %s, %s)",
            (wanted.model_sha256, wanted.model_id, wanted.dim),
        )
        return
    if stored.model_sha256 != wanted.model_sha256:
        raise mismatch(location, stored, wanted.model_id, wanted.model_sha256)
    if stored.dim != wanted.dim:
        raise ValueError(f"gallery {location} holds {stored.dim}-d vectors, not {wanted.dim}-d")
    if stored.model_id != wanted.model_id:
        conn.execute("UPDATE gallery_meta SET model_id = %s", (wanted.model_id,))


def mismatch(
    location: str, stored: ModelBinding, model_id: str, model_sha256: str
) -> GalleryModelMismatchError:
    """The error of a gallery opened (or written) with another model than its vectors'."""
    return GalleryModelMismatchError(
        f"gallery {location} holds vectors made by model {stored.model_id} "
        f"(sha256 {stored.model_sha256[:12]}...), not by {model_id} "
        f"(sha256 {model_sha256[:12]}...); vectors of different models cannot be "
        f"compared. Run `alexnet reindex` to re-embed its images with {model_id}, "
        "or use another gallery database."
    )

"""A durable gallery of images and their FC7 vectors, searched by Euclidean distance.

    root/
      gallery.sqlite3     items (id, label, metadata, image file, sha256, vector), meta (model,
                          change count), deleted (the rowids deleted, by change)
      gallery.faiss       the compressed index and the change count it reflects (none while
                          the index is exact)
      gallery.lock        held (flock) while a process has the gallery open
      images/<id><ext>    the uploaded bytes, as uploaded

SQLite is the source of truth; the FAISS index (FAISS id = SQLite rowid) is an in-memory copy
made at open: exact (`IDMap2,Flat`) while the gallery holds at most `exact_max` items,
above that a compressed one (`vector_index.CompressedIndex`: PCA + IVF + 8-bit codes,
candidates re-ranked by their exact distance from the vectors in SQLite). The switch happens
at open or when an add crosses the size; a delete takes effect in either. The exact index is
rebuilt from the rows at open (a second at most); the compressed one is persisted in
gallery.faiss (after a build, in the background, and at close) and at open read back and
brought up to date with the rows committed since (every write counts one change, deletes
are logged, rowids never reused), unless it does not fit them (another model, vectors
replaced, damaged, lists too few): then it is rebuilt, so the file only ever saves time.

An image file is written and fsynced before its row is committed, so an item that `add`
returned survives a crash; a file without a row is removed at the next open. The rows of one
`add_vectors` call (vectors made elsewhere: the bench) share one file, removed with the last
of them. Vectors of different models never mix: a gallery is bound to the sha256 of the
model that made its vectors (`GalleryModelMismatchError`, `replace_vectors`).

One module per job, `Gallery` (facade.py) wiring them:

    items.py         NewItem, Item, Neighbor, ModelBinding, the errors, the input checks
    folder_lock.py   the exclusive flock on gallery.lock
    sqlite_db.py     schema, WAL + synchronous=FULL, transactions, the model binding
    sqlite_rows.py   the statements on the items table (one chunked reader, one IN lookup)
    image_files.py   the durable image files, their removal, the orphan sweep at open
    batches.py       what an add writes (checked rows, vectors, files) and in which order
    index_policy.py  the live index: exact or compressed, when it switches, how it trains
    vector_index.py  ExactIndex and CompressedIndex (FAISS)
    index_file.py    gallery.faiss: the stamp and the FAISS bytes, checksummed, written whole
    index_restore.py whether the file serves at open, and its catch-up with the rows
    index_saver.py   when the file is written: in the background after a build, at close
    search.py        a query answered: index hits -> `Neighbor`s

Example:
    with Gallery.open("gallery", model_sha256=manifest.sha256, model_id=manifest.id) as g:
        [item_id] = g.add([NewItem(image_bytes=data, image_ext=".jpg", vector=fc7)])
        neighbors = g.search(fc7, k=10)
"""

from __future__ import annotations

from service.gallery.backends import open_gallery, stored_model
from service.gallery.facade import Gallery
from service.gallery.interface import GalleryBackend
from service.gallery.items import (
    GalleryLockedError,
    GalleryModelChangedError,
    GalleryModelMismatchError,
    GalleryUnavailableError,
    Item,
    ItemRecord,
    ModelBinding,
    Neighbor,
    NewItem,
    StoredImage,
    is_valid_id,
)
from service.gallery.location import is_database_url, shown

__all__ = [
    "Gallery",
    "GalleryBackend",
    "GalleryLockedError",
    "GalleryModelChangedError",
    "GalleryModelMismatchError",
    "GalleryUnavailableError",
    "Item",
    "ItemRecord",
    "ModelBinding",
    "Neighbor",
    "NewItem",
    "StoredImage",
    "is_database_url",
    "is_valid_id",
    "open_gallery",
    "shown",
    "stored_model",
]

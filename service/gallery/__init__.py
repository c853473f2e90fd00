"""A durable gallery of images and their FC7 vectors, searched by Euclidean distance.

    root/
      gallery.sqlite3     items (id, label, metadata, image file, sha256, vector) + meta (model)
      gallery.lock        held (flock) while a process has the gallery open
      images/<id><ext>    the uploaded bytes, as uploaded

SQLite is the source of truth; the FAISS index (FAISS id = SQLite rowid) is an in-memory copy
rebuilt at open: exact (`IDMap2,Flat`) while the gallery holds at most `exact_max` items,
above that a compressed one (`vector_index.CompressedIndex`: PCA + IVF + 8-bit codes,
candidates re-ranked by their exact distance from the vectors in SQLite). The switch happens
at open or when an add crosses the size; a delete takes effect in either.

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
    search.py        a query answered: index hits -> `Neighbor`s

Example:
    with Gallery.open("gallery", model_sha256=manifest.sha256, model_id=manifest.id) as g:
        [item_id] = g.add([NewItem(image_bytes=data, image_ext=".jpg", vector=fc7)])
        neighbors = g.search(fc7, k=10)
"""

from __future__ import annotations

from service.gallery.backends import is_database_url, open_gallery, shown, stored_model
from service.gallery.facade import Gallery
from service.gallery.interface import GalleryBackend
from service.gallery.items import (
    GalleryLockedError,
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

__all__ = [
    "Gallery",
    "GalleryBackend",
    "GalleryLockedError",
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

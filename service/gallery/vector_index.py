"""The gallery's in-memory search index: exact below a size, compressed above it.

- `ExactIndex`: FAISS `IDMap2,Flat` (squared L2 over every full vector). At 4096-d that is
  16 KB a vector in memory and one full scan per query: fine up to some ten thousand items.
- `CompressedIndex`: PCA to 256 dims (a randomized SVD of a sample), then FAISS `IVFn,SQ8`
  (an inverted file of `n` lists, 8-bit scalar codes: about 270 B a vector), searched for
  a short list of candidates (`rerank`, at least 4 x k) that are then ranked again by
  their exact Euclidean distance, computed from the full vectors that `fetch` reads (the
  gallery's SQLite rows). PCA short codes for FC7 are what the AlexNet paper suggests and
  what Babenko et al. (2014) found to work; the re-ranking makes the distances exact.

Both take int64 ids (the gallery's SQLite rowids) and answer `search` with (id, squared
distance) pairs, nearest first. Neither is thread-safe: the gallery's lock serialises them.
A compressed index goes to bytes and back (`to_bytes`, `from_bytes`: FAISS's own
serialisation, what `write_index` / `read_index` write) to be persisted (`index_file`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import faiss
import numpy as np

PCA_DIM = 256  # dims kept by the PCA of the compressed index
NPROBE = 48  # inverted lists visited per query
RERANK = 64  # candidates re-ranked exactly per query (at least 4 x k)
MIN_POINTS_PER_LIST = 39  # FAISS's k-means wants at least 39 training points per list
MAX_LISTS = 4096
TRAIN_SAMPLE = 65_536  # vectors that train the lists (read in chunks, kept as 256-d: 64 MB)
PCA_SAMPLE = 8192  # of those, the ones that train the PCA (128 MB at 4096-d)
MIN_TRAIN = 64  # fewer vectors than this cannot train a compressed index

Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""ids (int64) -> (the ids found, their full float32 vectors); deleted ids are left out."""


def _as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, dim))


class ExactIndex:
    """Exact squared-L2 search over every vector (`IDMap2,Flat`)."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, dim) vectors under int64 ids."""
        self._index.add_with_ids(_as_matrix(vectors, self.dim), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The `n` nearest (id, squared distance) pairs, nearest first."""
        n = min(n, self.ntotal)
        if n < 1:
            return []
        sq, ids = self._index.search(_as_matrix(query, self.dim), n)
        return [(int(i), float(d)) for i, d in zip(ids[0], sq[0], strict=True) if i >= 0]

    def memory_bytes(self) -> int:
        """Bytes the index holds (vectors and ids)."""
        return self.ntotal * (self.dim * 4 + 8)


def pca_transform(sample: np.ndarray, k: int, seed: int = 0) -> faiss.LinearTransform:
    """x -> the coordinates of x - mean along the top `k` principal directions of `sample`.

    A randomized SVD (Halko et al. 2011: a Gaussian sketch of k + 16 columns, two power
    iterations): seconds at 8192 x 4096, where an eigendecomposition of the 4096 x 4096
    covariance (faiss's PCAMatrix) takes minutes on two cores.
    """
    mean = sample.mean(0)
    centred = sample - mean
    width = min(k + 16, *centred.shape)
    sketch = np.random.default_rng(seed).standard_normal((centred.shape[1], width))
    q, _ = np.linalg.qr(centred @ sketch.astype(np.float32))
    for _ in range(2):
        q, _ = np.linalg.qr(centred @ (centred.T @ q))
    _, _, vt = np.linalg.svd(q.T @ centred, full_matrices=False)
    a = np.ascontiguousarray(vt[:k], dtype=np.float32)  # (k, dim)
    transform = faiss.LinearTransform(sample.shape[1], k, True)
    faiss.copy_array_to_vector(a.ravel(), transform.A)
    faiss.copy_array_to_vector((-a @ mean).astype(np.float32), transform.b)
    transform.is_trained = True
    return transform


def list_count(expected: int, train_size: int) -> int:
    """Inverted lists for `expected` vectors trained on `train_size`: about 4 sqrt(expected),
    capped so each list gets enough training points."""
    return max(1, min(int(4 * math.sqrt(max(expected, 1))), train_size // MIN_POINTS_PER_LIST,
                      MAX_LISTS))  # fmt: skip


class CompressedIndex:
    """PCA + IVF + SQ8 short codes in memory, exact re-ranking from the full vectors.

    Args:
        dim: vector length.
        fetch: reads full vectors by id for the re-ranking.
        sample: (m, dim) vectors that train the PCA and the lists (m >= MIN_TRAIN).
        more: further (j, dim) chunks that train the lists only, projected as they come.
        expected: how many vectors the index will hold (sizes the inverted file; kept as
            `expected`, which says when the lists are too few for the vectors held).
        nprobe: lists visited per query.
        rerank: candidates re-ranked exactly per query.
    """

    kind = "compressed"

    def __init__(
        self,
        dim: int,
        fetch: Fetch,
        sample: np.ndarray,
        *,
        expected: int,
        more: Iterable[np.ndarray] = (),
        nprobe: int = NPROBE,
        rerank: int = RERANK,
    ) -> None:
        sample = _as_matrix(sample, dim)
        if len(sample) < MIN_TRAIN:
            raise ValueError(f"a compressed index needs >= {MIN_TRAIN} training vectors")
        pca_dim = min(PCA_DIM, dim, len(sample) - 1)
        step = max(1, len(sample) // PCA_SAMPLE)
        pca = pca_transform(sample[::step][:PCA_SAMPLE], pca_dim)
        projected = np.concatenate(
            [pca.apply(sample)] + [pca.apply(_as_matrix(c, dim)) for c in more]
        )
        ivf = faiss.index_factory(pca_dim, f"IVF{list_count(expected, len(projected))},SQ8")
        ivf.train(projected)
        self._wire(dim, fetch, faiss.IndexPreTransform(pca, ivf), pca, ivf, expected, nprobe,
                   rerank)  # fmt: skip

    @classmethod
    def from_bytes(
        cls,
        dim: int,
        fetch: Fetch,
        data: np.ndarray,
        *,
        expected: int,
        nprobe: int = NPROBE,
        rerank: int = RERANK,
    ) -> CompressedIndex:
        """The index that `to_bytes` made, with its vectors (ValueError if `data` holds
        another kind of index or another `dim`; FAISS's RuntimeError if it is malformed).

        Args:
            expected: how many vectors its lists were sized for (see the class).
        """
        index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        parts = None
        if isinstance(index, faiss.IndexPreTransform) and index.chain.size() == 1:
            pca = faiss.downcast_VectorTransform(index.chain.at(0))
            ivf = faiss.downcast_index(index.index)
            if isinstance(pca, faiss.LinearTransform) and isinstance(
                ivf, faiss.IndexIVFScalarQuantizer
            ):
                parts = pca, ivf
        if parts is None or index.d != dim:
            raise ValueError(f"not a {dim}-d PCA + IVF + SQ8 index: {type(index).__name__}")
        self = cls.__new__(cls)
        self._wire(dim, fetch, index, *parts, expected, nprobe, rerank)
        return self

    def _wire(
        self,
        dim: int,
        fetch: Fetch,
        index: faiss.IndexPreTransform,
        pca: faiss.LinearTransform,
        ivf: faiss.IndexIVFScalarQuantizer,
        expected: int,
        nprobe: int,
        rerank: int,
    ) -> None:
        self.dim, self.fetch, self.rerank, self.expected = dim, fetch, rerank, expected
        # Kept as attributes: `index` owns its parts (or, when built here, points at them).
        self._index, self._pca, self._ivf = index, pca, ivf
        self.pca_dim, self.nlist = int(ivf.d), int(ivf.nlist)
        self._ivf.nprobe = min(nprobe, self.nlist)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self._ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._ivf.nprobe = min(value, self.nlist)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, dim) vectors under int64 ids (only their short codes are kept)."""
        self._index.add_with_ids(_as_matrix(vectors, self.dim), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        self._index.remove_ids(np.asarray(ids, dtype=np.int64))

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        """Ids of the `n` nearest by the short codes (approximate), nearest first."""
        _, ids = self._index.search(_as_matrix(query, self.dim), n)
        return ids[0][ids[0] >= 0]

    def search(self, query: np.ndarray, n: int) -> list[tuple[int, float]]:
        """The `n` nearest (id, exact squared distance) among the re-ranked candidates."""
        n = min(n, self.ntotal)
        if n < 1:
            return []
        ids = self.candidates(query, min(max(self.rerank, 4 * n), self.ntotal))
        found, vectors = self.fetch(ids)
        if len(found) == 0:
            return []
        diff = vectors - np.asarray(query, dtype=np.float32).reshape(1, -1)
        sq = np.einsum("ij,ij->i", diff, diff)
        order = np.argsort(sq, kind="stable")[:n]
        return [(int(found[i]), float(sq[i])) for i in order]

    def to_bytes(self) -> np.ndarray:
        """The whole index (PCA matrix, centroids, codes, ids) as uint8, for `from_bytes`."""
        return faiss.serialize_index(self._index)

    def memory_bytes(self) -> int:
        """Bytes of the serialised index (PCA matrix, centroids, codes, ids)."""
        return int(self.to_bytes().nbytes)

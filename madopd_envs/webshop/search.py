"""Product search: BM25 with ``bm25s`` + PyStemmer in place of upstream's Lucene (pyserini, Java 21).

Upstream indexes, per product, the lower-cased ``Title + Description + BulletPoints[0] + options``
text (search_engine/convert_product_file_format.py) with Lucene's English analyser and BM25
(k1=0.9, b=0.4), and returns the top 50 hits. This index uses the same document text, the same BM25
variant and parameters (``method="lucene"``), English stop words and the Snowball English stemmer.
Like Lucene it returns only documents matching at least one query term, ties broken by document
order. Scores therefore follow the same formula; rankings can still differ from Lucene's in detail
(tokeniser and stemmer are not byte-identical).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from madopd_envs.webshop.data import Product

SEARCH_RETURN_N = 50  # upstream engine.py
K1, B = 0.9, 0.4  # pyserini's LuceneSearcher defaults


def document_text(p: "Product") -> str:
    """The text upstream indexes for one product."""
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in p.options.items())
    first_bullet = p.bullet_points[0] if p.bullet_points else ""
    return " ".join([p.title, p.description, first_bullet, option_text]).lower()


class SearchIndex:
    """BM25 over product documents; ``search(query)`` returns ranked asins (at most 50)."""

    def __init__(self, asins: Sequence[str], retriever, stemmer):
        self.asins = list(asins)
        self._retriever = retriever
        self._stemmer = stemmer

    @classmethod
    def build(cls, products: Sequence["Product"]) -> "SearchIndex":
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize([document_text(p) for p in products], stopwords="en", stemmer=stemmer,
                                show_progress=False)
        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index(tokens, show_progress=False)
        return cls([p.asin for p in products], retriever, stemmer)

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[str]:
        import bm25s

        tokens = bm25s.tokenize([query.lower()], stopwords="en", stemmer=self._stemmer, return_ids=False,
                                show_progress=False)[0]
        # Terms the corpus never saw score nothing (Lucene ignores them too).
        ids = [self._retriever.vocab_dict[t] for t in tokens if t in self._retriever.vocab_dict]
        if not ids:
            return []
        scores = self._retriever.get_scores(ids)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            # Keep the k best (plus everyone tied with the k-th), then order by score, then doc order.
            kth = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
            hits = hits[scores[hits] >= kth]
        order = np.lexsort((hits, -scores[hits]))
        return [self.asins[i] for i in hits[order][:k]]

    # -- on-disk cache for large (official) catalogues -------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        self._retriever.save(str(directory))
        (directory / "asins.json").write_text(json.dumps(self.asins))

    @classmethod
    def load(cls, directory: str | Path) -> "SearchIndex":
        import bm25s
        import Stemmer

        directory = Path(directory)
        retriever = bm25s.BM25.load(str(directory))
        asins = json.loads((directory / "asins.json").read_text())
        return cls(asins, retriever, Stemmer.Stemmer("english"))


def corpus_key(products: Sequence["Product"]) -> str:
    """A digest of the indexed text, naming a cached index that matches these products exactly."""
    h = hashlib.sha256(f"bm25s-lucene-{K1}-{B}-en-snowball".encode())
    for p in products:
        h.update(p.asin.encode())
        h.update(document_text(p).encode())
    return h.hexdigest()[:16]

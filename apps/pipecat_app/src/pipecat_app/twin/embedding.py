"""Text to vectors for the router: the interface, and TF-IDF over character n-grams.

A :class:`TextEncoder` turns texts into L2-normalised rows, so a dot product
is their cosine similarity. It is *fitted* on the texts it will be compared
with (the domains' example utterances): a lexical encoder learns its
vocabulary there; a sentence-embedding model would ignore the fit.

:class:`TfidfEncoder` is scikit-learn's ``TfidfVectorizer`` on two views of a
text: words (with English stop words left out) and character n-grams inside
word boundaries (``char_wb``), which meet "debugging"/"debug" and
"recipes"/"recipe" without a stemmer. Encoding one turn takes well under a
millisecond. Sentence embeddings were measured too (all-MiniLM-L6-v2 and
paraphrase-MiniLM-L3-v2 as ONNX on onnxruntime): 10 to 45 ms per turn on two
cores, over the router's budget (``twin/README.md``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.preprocessing import normalize


class TextEncoder(Protocol):
    """Texts to L2-normalised row vectors (dense or scipy-sparse)."""

    def fit(self, texts: Sequence[str]) -> None:
        """Learn what the encoder needs from the texts it will be compared with."""

    def encode(self, texts: Sequence[str]) -> Any:
        """One L2-normalised row per text."""


def cosine(a: Any, b: Any) -> np.ndarray:
    """Dense matrix of cosine similarities between the rows of ``a`` and of ``b``."""
    product = a @ b.T
    return product.toarray() if sparse.issparse(product) else np.asarray(product)


_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> str:
    """The text lower-cased, without English stop words (scikit-learn's list)."""
    return " ".join(w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS)


class TfidfEncoder:
    """TF-IDF over words and over character n-grams (scikit-learn), L2-normalised.

    The two views are stacked side by side; scikit-learn's ``FeatureUnion``
    would do the same at several times the cost per turn.
    """

    def __init__(self) -> None:
        self._views = (
            TfidfVectorizer(stop_words="english", sublinear_tf=True),
            TfidfVectorizer(
                analyzer="char_wb",
                preprocessor=content_words,
                ngram_range=(3, 5),
                sublinear_tf=True,
            ),
        )

    def fit(self, texts: Sequence[str]) -> None:
        """Learn both vocabularies and their IDF from ``texts``."""
        for view in self._views:
            view.fit(texts)

    def encode(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """One L2-normalised sparse row per text (all zero: nothing in the vocabulary)."""
        stacked = sparse.hstack([view.transform(texts) for view in self._views], format="csr")
        return normalize(stacked)

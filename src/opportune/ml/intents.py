"""The offline intent matcher of a bot flow: TF-IDF of character n-grams (whole-word
windows of 2–5 characters, lower case, accents stripped, so typos and inflections still
share most n-grams) and a logistic regression, trained from the flow's examples at load.

Written with numpy alone (it was scikit-learn's ``TfidfVectorizer(analyzer="char_wb")`` and
``LogisticRegression(C=10)``, which a server with bot flows loaded at start with SciPy:
~90 MB of its resident memory). The features are the same as the vectorizer's (sublinear
TF, smoothed IDF, unit rows); the regression is the same objective (softmax log-loss plus
``|W|² / 2C``), minimised by accelerated gradient descent in the span of the examples
(``W = Xᵀ A``): with a few hundred examples a step is one small matrix product of their
Gram matrix, so training a flow takes milliseconds.

One model per language by default: measured on the demo flows' held-out utterances
(``bench/intents.py``), it is as accurate as one model for both languages and no slower.

>>> m = IntentMatcher({
...     "pin": {"en": ["forgot my pin", "reset my pin", "new pin code"]},
...     "travel": {"en": ["going abroad", "travel notice", "trip to france"]},
... })
>>> m.predict("I forgot the PIN", "en")[0], m.predict("", "en")
('pin', (None, 0.0))
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from opportune.core.bot import Flow

NONE = "__none__"  # the background class of a flow with a single intent
# Words about nothing in particular: with one intent, the model still needs a second class.
_BACKGROUND = {
    "en": ["hello", "thanks", "ok", "what time is it", "the weather today", "who are you",
           "nothing", "bye", "good morning", "how are you", "tell me a joke", "yes", "no"],
    "es": ["hola", "gracias", "vale", "qué hora es", "el tiempo hoy", "quién eres",
           "nada", "adiós", "buenos días", "cómo estás", "cuéntame un chiste", "sí", "no"],
}  # fmt: skip

Examples = Mapping[str, Mapping[str, Sequence[str]]]  # intent -> language -> utterances
NGRAMS = (2, 5)
_SPACES = re.compile(r"\s\s+")


def ngrams(text: str) -> list[str]:
    """The character n-grams of ``text``'s words, each word padded with a space, lower
    case and without accents (scikit-learn's ``char_wb`` analyzer).

    >>> ngrams("Año")[:4]
    [' a', 'an', 'no', 'o ']
    """
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    out: list[str] = []
    low, high = NGRAMS
    for word in _SPACES.sub(" ", text).split():
        w = f" {word} "
        for n in range(low, high + 1):
            offset = 0
            out.append(w[:n])
            while offset + n < len(w):
                offset += 1
                out.append(w[offset : offset + n])
            if offset == 0:  # a word shorter than n: counted once
                break
    return out


class _Model:
    """TF-IDF of n-grams and a softmax regression over ``classes``."""

    def __init__(self, texts: Sequence[str], labels: Sequence[str], c: float) -> None:
        grams = [Counter(ngrams(t)) for t in texts]
        vocab: dict[str, int] = {}
        for g in grams:
            for k in g:
                vocab.setdefault(k, len(vocab))
        df = np.zeros(len(vocab))
        for g in grams:
            df[[vocab[k] for k in g]] += 1
        n = len(texts)
        self.vocab = vocab
        self.idf = np.log((1 + n) / (1 + df)) + 1
        X = np.zeros((n, len(vocab)))
        for i, g in enumerate(grams):
            X[i, [vocab[k] for k in g]] = [1 + math.log(v) for v in g.values()]
        X *= self.idf
        X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
        self.classes_ = sorted(set(labels))
        Y = np.zeros((n, len(self.classes_)))
        Y[np.arange(n), [self.classes_.index(lab) for lab in labels]] = 1.0
        A, b = _fit(X @ X.T, Y, c)
        self.W = X.T @ A  # (features, classes)
        self.b = b

    def predict_proba(self, text: str) -> np.ndarray:
        g = Counter(k for k in ngrams(text) if k in self.vocab)
        if not g:
            logits = self.b
        else:
            idx = [self.vocab[k] for k in g]
            x = np.array([1 + math.log(v) for v in g.values()]) * self.idf[idx]
            logits = (x / np.linalg.norm(x)) @ self.W[idx] + self.b
        e = np.exp(logits - logits.max())
        return e / e.sum()


def _fit(
    K: np.ndarray, Y: np.ndarray, c: float, iterations: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """Dual weights ``A`` (``W = Xᵀ A``) and biases minimising the softmax log-loss plus
    ``|W|² / 2C`` by Nesterov's accelerated gradient; ``K`` is the Gram matrix ``X Xᵀ``.

    >>> K = np.eye(2); Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> A, b = _fit(K, Y, 10.0)
    >>> bool(A[0, 0] > A[0, 1] and A[1, 1] > A[1, 0])
    True
    """
    n, k = Y.shape
    # Lipschitz constant of the gradient in W (softmax curvature ≤ 1/2, the bias's column of
    # ones adds n), so a step of 1/L never overshoots.
    v = np.ones(n) / math.sqrt(n)
    for _ in range(30):  # power iteration for K's largest eigenvalue
        w = K @ v
        v = w / max(np.linalg.norm(w), 1e-12)
    lipschitz = 0.5 * (float(v @ K @ v) + n) + 1 / c
    step = 1 / lipschitz
    A = np.zeros((n, k))
    b = np.zeros(k)
    A_prev, b_prev = A, b
    for t in range(1, iterations + 1):
        momentum = (t - 1) / (t + 2)
        Ay = A + momentum * (A - A_prev)
        by = b + momentum * (b - b_prev)
        logits = K @ Ay + by
        logits -= logits.max(axis=1, keepdims=True)
        P = np.exp(logits)
        P /= P.sum(axis=1, keepdims=True)
        G = P - Y
        A_prev, b_prev = A, b
        A = Ay - step * (G + Ay / c)
        b = by - step * G.sum(axis=0)
    return A, b


class IntentMatcher:
    """Which intent a visitor's words are, with the model's probability as confidence."""

    def __init__(self, examples: Examples, *, per_language: bool = True, c: float = 10.0):
        started = time.perf_counter()
        languages = sorted({lang for by_lang in examples.values() for lang in by_lang})
        self.languages = tuple(languages)
        groups = [[lang] for lang in languages] if per_language else [languages]
        self._models: dict[str, _Model] = {}
        for group in groups:
            model = _train(examples, group, c)
            for lang in group:
                self._models[lang] = model
        self.training_seconds = time.perf_counter() - started

    @classmethod
    def for_flow(cls, flow: Flow, *, per_language: bool = True) -> IntentMatcher:
        """The matcher trained from ``flow``'s intents' examples."""
        examples = {name: intent.examples for name, intent in flow.intents.items()}
        return cls(examples, per_language=per_language)

    def predict(self, text: str, locale: str) -> tuple[str | None, float]:
        """(intent, confidence) for ``text`` said in ``locale``; (None, 0.0) for no words."""
        words = " ".join(text.split())[:1000]
        if not words or not self._models:
            return None, 0.0
        lang = locale.split("-")[0].lower()
        model = self._models.get(lang) or self._models[self.languages[0]]
        probs = model.predict_proba(words)
        best = int(np.argmax(probs))
        intent = model.classes_[best]
        return (None if intent == NONE else intent), float(probs[best])


def _train(examples: Examples, languages: Sequence[str], c: float) -> _Model:
    texts: list[str] = []
    labels: list[str] = []
    for intent, by_lang in examples.items():
        for lang in languages:
            for utterance in by_lang.get(lang, ()):
                texts.append(utterance)
                labels.append(intent)
    if len(set(labels)) < 2:
        for lang in languages:
            texts += _BACKGROUND.get(lang, _BACKGROUND["en"])
            labels += [NONE] * len(_BACKGROUND.get(lang, _BACKGROUND["en"]))
    return _Model(texts, labels, c)

"""The classical baseline beside the transformer: TF-IDF (word 1-2 grams + char 3-5 grams) + a linear model.

Most image descriptions name their class, so keywords carry much of the signal: this baseline trains
in about a minute on 1000 classes and scores thousands of texts per second on a CPU. Up to
`svm_max_texts` training texts the linear model is a one-vs-rest linear SVM; above that, a softmax
factored through a few dozen numbers (`tasks/model/factored.py`), whose cost does not multiply texts
by classes. Its probabilities are a softmax of the margins divided by one temperature, fitted by
likelihood on the held-out split when one is given (a single scalar: top-1, top-5 and macro-F1 do
not change).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.common.errors import InputError
from tasks.common.probability import softmax as _softmax
from tasks.model.evaluation import cross_entropy

BASELINE_NAME = "tfidf-linear"
MODEL_FILE = "model.joblib"
META_FILE = "baseline.json"


@dataclass
class BaselineConfig:
    """Hyper-parameters of the TF-IDF + linear SVM baseline."""

    word_ngrams: tuple[int, int] = field(default=(1, 2), metadata={"help": "word n-gram range"})
    char_ngrams: tuple[int, int] = field(default=(3, 5), metadata={"help": "char (within word) n-gram range"})
    min_df: int = field(default=1, metadata={"help": "ignore n-grams seen in fewer texts"})
    max_features: int | None = field(default=500_000, metadata={"help": "cap per n-gram family"})
    c: float = field(default=0.5, metadata={"help": "SVM regularisation (larger fits harder)"})
    seed: int = field(default=0, metadata={"help": "random state of the solver"})
    solver: str = field(
        default="auto",
        metadata={"help": "svm (one-vs-rest linear SVM), factored (softmax through `dim` numbers), or auto"},
    )
    svm_max_texts: int = field(
        default=50_000, metadata={"help": "auto: the SVM up to this many training texts, factored above"}
    )
    dim: int = field(default=64, metadata={"help": "factored: numbers between features and classes"})
    epochs: int = field(default=5, metadata={"help": "factored: passes over the training texts"})


SOLVERS = ("auto", "svm", "factored")
TEMPERATURE_TEXTS = 20_000  # held-out texts the temperature is fitted on, at most


def pick_solver(config: BaselineConfig, n_texts: int) -> str:
    """The solver a fit of `n_texts` texts uses: the SVM is measured best, but it is texts x classes per pass.

    On 18,780 ImageNet-shaped caption texts (1000 classes), the SVM took 37 s and reached 0.521 top-1
    on held-out texts, the factored softmax 2.5 s and 0.517; at 1.3 million texts the SVM would need
    hours and ~8 GB of weights.
    """
    if config.solver not in SOLVERS:
        raise InputError(f"unknown baseline solver {config.solver!r}; expected one of {', '.join(SOLVERS)}")
    if config.solver != "auto":
        return config.solver
    return "svm" if n_texts <= config.svm_max_texts else "factored"


class TfidfLinearModel:
    """A fitted baseline: `.labels` (wnids, column order) and `.predict_proba(texts)`."""

    kind = "baseline"
    solver = "svm"  # baselines saved before the factored solver existed are SVMs

    def __init__(
        self, labels: list[str], vectorizer, classifier, temperature: float = 1.0, config=None, solver="svm"
    ):
        self.labels = list(labels)
        self.vectorizer = vectorizer
        self.classifier = classifier
        self.temperature = float(temperature)
        self.config = config
        self.solver = solver

    def decision_function(self, texts: Sequence[str]) -> np.ndarray:
        """SVM margins (n, len(labels)), columns in `labels` order."""
        scores = self.classifier.decision_function(self.vectorizer.transform(list(texts)))
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim == 1:  # two classes: sklearn returns the margin of the second one
            scores = np.stack([-scores, scores], axis=1)
        return scores

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (n, len(labels)): softmax of the margins over the fitted temperature."""
        return _softmax(self.decision_function(texts) / self.temperature)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.decision_function(texts).argmax(axis=1)]


def fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(scores / T) on (scores, y)."""
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        return 1.0
    scores = scores.astype(np.float64)

    def nll(log_t: float) -> float:
        return cross_entropy(scores / np.exp(log_t), y)

    result = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e2)), method="bounded")
    return float(np.exp(result.x))


def _vectorizer(config: BaselineConfig):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    def tfidf(analyzer: str, ngrams: tuple[int, int]):
        return TfidfVectorizer(
            analyzer=analyzer,
            ngram_range=tuple(ngrams),
            min_df=config.min_df,
            max_features=config.max_features,
            sublinear_tf=True,
            lowercase=True,
            dtype=np.float32,
        )

    return FeatureUnion(
        [("word", tfidf("word", config.word_ngrams)), ("char", tfidf("char_wb", config.char_ngrams))]
    )


def train_baseline(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    classes: Sequence[str] | None = None,
    eval_texts: Sequence[str] | None = None,
    eval_labels: Sequence[str] | None = None,
    temperature: float | None = None,
    config: BaselineConfig | None = None,
) -> TfidfLinearModel:
    """Fit the baseline on (texts, wnid labels); columns follow `classes` (default: sorted labels).

    The temperature is fitted on (eval_texts, eval_labels) when given, else `temperature` (or 1.0).
    """
    config = config or BaselineConfig()
    if len(texts) != len(labels):
        raise InputError("texts and labels differ in length")
    if not len(texts):
        raise InputError("the baseline needs at least one training text")
    classes = list(classes) if classes is not None else sorted(set(labels))
    index = {w: i for i, w in enumerate(classes)}
    unknown = set(labels) - index.keys()
    if unknown:
        raise InputError(f"training labels outside the classes: {sorted(unknown)[:5]}")
    y = np.array([index[w] for w in labels])
    vectorizer = _vectorizer(config)
    solver = pick_solver(config, len(texts))
    features = vectorizer.fit_transform(list(texts))
    for _, part in vectorizer.transformer_list:
        # Every n-gram cut by max_features, kept for introspection only: at a million texts it is
        # most of the pickle and of the memory a loaded model takes.
        part.stop_words_ = None
    present = np.unique(y)
    if len(present) == 1:
        # One class only: every text gets that class; keep the shapes the scorer expects.
        classifier = _ConstantClassifier(int(present[0]), len(classes))
    elif solver == "factored":
        from tasks.model.factored import fit_factored

        classifier = fit_factored(
            features, y, len(classes), dim=config.dim, epochs=config.epochs, seed=config.seed
        )
    else:
        from sklearn.svm import LinearSVC

        classifier = LinearSVC(C=config.c, random_state=config.seed).fit(features, y)
        if len(present) < len(classes) or len(classes) == 2:
            classifier = _FullWidth(classifier, len(classes))
    model = TfidfLinearModel(classes, vectorizer, classifier, 1.0, config, solver)
    if eval_texts is not None and eval_labels is not None and len(eval_texts):
        known = [i for i, w in enumerate(eval_labels) if w in index]
        if len(known) > TEMPERATURE_TEXTS:  # one scalar: a sample pins it down, all texts cost GBs
            picked = np.random.default_rng(config.seed).choice(len(known), TEMPERATURE_TEXTS, replace=False)
            known = [known[i] for i in np.sort(picked)]
        scores = model.decision_function([eval_texts[i] for i in known])
        model.temperature = fit_temperature(scores, np.array([index[eval_labels[i]] for i in known]))
    elif temperature is not None:
        model.temperature = float(temperature)
    return model


class _FullWidth:
    """Margins for every class column, also those the training data lacked (set very low)."""

    def __init__(self, inner, n_classes: int):
        self.inner = inner
        self.n_classes = n_classes

    def decision_function(self, features):
        raw = np.asarray(self.inner.decision_function(features), dtype=np.float32)
        if raw.ndim == 1:
            raw = np.stack([-raw, raw], axis=1)
        out = np.full((raw.shape[0], self.n_classes), -10.0, dtype=np.float32)
        out[:, self.inner.classes_] = raw
        return out


class _ConstantClassifier:
    def __init__(self, label: int, n_classes: int):
        self.label = label
        self.n_classes = n_classes

    def decision_function(self, features):
        out = np.full((features.shape[0], self.n_classes), -1.0, dtype=np.float32)
        out[:, self.label] = 1.0
        return out


def save_baseline(model: TfidfLinearModel, path: str | Path, extra: dict | None = None) -> Path:
    """Write the model (joblib) and a small JSON description into the folder `path`."""
    import joblib

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path / MODEL_FILE, compress=3)
    meta = {
        "kind": "baseline",
        "base_model": BASELINE_NAME,
        "labels": model.labels,
        "temperature": model.temperature,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }
    (path / META_FILE).write_text(json.dumps(meta, indent=1))
    return path


def load_baseline(path: str | Path) -> TfidfLinearModel:
    """Load a saved baseline (its folder or the .joblib file); `.labels` and `.predict_proba(texts)`."""
    import joblib

    path = Path(path)
    file = path / MODEL_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no saved baseline at {path} ({MODEL_FILE} missing)")
    # A baseline pickled before the model package existed names its classes' module `tasks.baseline`.
    sys.modules.setdefault("tasks.baseline", sys.modules[__name__])
    model = joblib.load(file)
    if not isinstance(model, TfidfLinearModel):
        raise InputError(f"{file} does not hold a tfidf-linear baseline")
    return model

"""The final pipeline step: one linear model with Platt calibration, plus optional category heads.

A single linear model (rather than an ensemble of calibrated folds) keeps explanations exact:
the logit is ``a * (w . x + b) + c``, so ``w_j * x_j`` is feature j's contribution.

Optionally the first ``nb_columns`` columns (the n-grams) are scaled by ``|r_j| ** nb_power`` before the fit,
where ``r_j`` is the naive-Bayes log-count ratio of n-gram j (Wang & Manning 2012, "NBSVM"): n-grams that are
much more frequent in one class get a weaker penalty, ones that both classes use alike a stronger one. The scale
is folded back into the weights, so the fitted model is still ``w . x`` on the unscaled features.

Optionally (``nb_mix``) the naive-Bayes log-ratios themselves are added to the fitted weights: the score is
``(1 - m) * z_lr + m * z_nb`` with both parts brought to the same spread on the training rows (the NBSVM
interpolation of Wang & Manning, done on logits). Naive Bayes trusts a rare n-gram seen only in one class more
than a regularised regression does, which helps short comments. Still one weight vector, so explanations stay
exact; n-grams never seen in training get a log-ratio of zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))


def _fit_linear(X: Any, y: np.ndarray, w: np.ndarray, C: float, random_state: int) -> tuple[np.ndarray, float]:
    lr = LogisticRegression(C=C, solver="liblinear", max_iter=500, random_state=random_state)
    lr.fit(X, y, sample_weight=w)
    return lr.coef_.ravel().astype(np.float64), float(lr.intercept_[0])


def nb_scale(X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, columns: int, power: float, alpha: float) -> np.ndarray:
    """Per-column factor ``|r| ** power`` for the first ``columns`` columns (1 elsewhere); ``r`` is the
    log-ratio of the (weighted, smoothed) share of each class's documents that contain the column."""
    scale = np.ones(X.shape[1])
    if power == 0.0 or columns == 0:
        return scale
    present = X[:, :columns].copy()
    present.data = np.ones_like(present.data, dtype=np.float64)
    pos = alpha + present.T @ (w * (y == 1))
    neg = alpha + present.T @ (w * (y == 0))
    r = np.log(pos / pos.sum()) - np.log(neg / neg.sum())
    scale[:columns] = np.abs(r) ** power
    return scale


def nb_log_ratio(X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, columns: int, alpha: float) -> np.ndarray:
    """Multinomial naive-Bayes log-ratio ``log P(j | pos) - log P(j | neg)`` of the first ``columns`` columns
    (weighted feature mass, additive smoothing ``alpha``), shifted so that a column unseen in training is 0:
    the class totals cancel out of the shift, leaving ``log(pos_j + alpha) - log(neg_j + alpha)``."""
    mass = X[:, :columns]
    pos = mass.T @ (w * (y == 1))
    neg = mass.T @ (w * (y == 0))
    return np.log(pos + alpha) - np.log(neg + alpha)


def fold_ids(y: np.ndarray, origin: np.ndarray, cv: int, random_state: int) -> np.ndarray:
    """Cross-validation fold per row: stratified over the original rows (``origin[i] == i``), and a copy
    (``origin[i]`` = the row it copies) in its original's fold. Without copies these are StratifiedKFold's folds."""
    originals = np.flatnonzero(origin == np.arange(len(y)))
    fold = np.zeros(len(y), dtype=np.int64)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    for k, (_, held) in enumerate(folds.split(np.zeros(len(originals)), y[originals])):
        fold[originals[held]] = k
    return fold[origin]


def _fit_platt(scores: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Sigmoid calibration of out-of-fold decision values (Platt 1999)."""
    lr = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
    lr.fit(scores.reshape(-1, 1), y, sample_weight=w)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


class ModerationClassifier(ClassifierMixin, BaseEstimator):
    """Weighted logistic regression, calibrated on out-of-fold scores, with per-category heads.

    ``fit(X, y, sample_weight=None, calibration_weight=None, categories=None, copy_of=None)``: ``categories``
    maps a category name to an array of 1/0 labels, -1 where the row's source does not annotate it; ``copy_of``
    gives, per row, the row it is a (misspelt) copy of, or -1 for an original. A copy is scored out of fold in its
    original's fold, so neither is scored by a model that learnt from the other.
    """

    def __init__(
        self,
        C: float = 4.0,
        head_C: float = 2.0,
        cv: int = 3,
        random_state: int = 0,
        nb_columns: int = 0,
        nb_power: float = 0.0,
        nb_alpha: float = 1.0,
        nb_mix: float = 0.0,
    ) -> None:
        self.C = C
        self.head_C = head_C
        self.cv = cv
        self.random_state = random_state
        self.nb_columns = nb_columns
        self.nb_power = nb_power
        self.nb_alpha = nb_alpha
        self.nb_mix = nb_mix

    def fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any = None,
        calibration_weight: Any = None,
        categories: Mapping[str, Any] | None = None,
        copy_of: Any = None,
    ) -> ModerationClassifier:
        X = sp.csr_matrix(X)
        y = np.asarray(y, dtype=np.int64)
        self.classes_ = np.array([0, 1])
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        cw = w if calibration_weight is None else np.asarray(calibration_weight, dtype=np.float64)
        origin = np.arange(len(y)) if copy_of is None else np.asarray(copy_of, dtype=np.int64)
        origin = np.where(origin < 0, np.arange(len(y)), origin)
        coef, intercept, a, b = self._fit_calibrated(X, y, w, cw, origin, self.C, self.nb_power, self.nb_mix)
        self.calibration_ = np.array([a, b])
        self.coef_ = coef
        self.intercept_ = intercept
        self.n_features_in_ = X.shape[1]

        names: list[str] = []
        head_rows: list[np.ndarray] = []
        head_params: list[tuple[float, float, float]] = []
        for name, labels in sorted((categories or {}).items()):
            labels = np.asarray(labels, dtype=np.int64)
            known = labels >= 0
            if known.sum() < 50 or labels[known].sum() < 10 or (labels[known] == 0).sum() < 10:
                continue  # too few examples to say anything about this category
            renumbered = np.cumsum(known) - 1  # a copy has its original's labels: both are known or neither
            hc, hi, a, b = self._fit_calibrated(
                X[known], labels[known], w[known], cw[known], renumbered[origin[known]], self.head_C, 0.0, 0.0
            )
            # Store heads sparse: they are fit on a subset, most hashed columns stay exactly zero.
            hc[np.abs(hc) < 1e-3 * np.abs(hc).max()] = 0.0
            names.append(name)
            head_rows.append(hc.astype(np.float32))
            head_params.append((hi, a, b))
        self.category_names_ = np.asarray(names, dtype=str)
        self.category_coef_ = sp.csr_matrix(
            np.vstack(head_rows) if head_rows else np.zeros((0, X.shape[1]), dtype=np.float32)
        )
        self.category_params_ = np.asarray(head_params, dtype=np.float64).reshape(-1, 3)
        return self

    def _fit_calibrated(
        self,
        X: sp.csr_matrix,
        y: np.ndarray,
        w: np.ndarray,
        cw: np.ndarray,
        origin: np.ndarray,
        C: float,
        nb_power: float,
        mix: float,
    ) -> tuple[np.ndarray, float, float, float]:
        """Linear model on all rows + Platt scaling fitted on out-of-fold decision values.

        The naive-Bayes parts are computed inside each fold too, so out-of-fold scores never saw their labels.
        Folds are drawn over the original rows (``origin[i] == i``); a copy joins its original's fold.
        """
        oof = np.zeros(len(y))
        fold = fold_ids(y, origin, self.cv, self.random_state)
        for k in range(self.cv):
            train_idx, held_idx = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
            coef, intercept = self._fit_scaled(X[train_idx], y[train_idx], w[train_idx], C, nb_power, mix)
            oof[held_idx] = X[held_idx] @ coef + intercept
        a, b = _fit_platt(oof, y, cw)
        coef, intercept = self._fit_scaled(X, y, w, C, nb_power, mix)
        return coef, intercept, a, b

    def _fit_scaled(
        self, X: sp.csr_matrix, y: np.ndarray, w: np.ndarray, C: float, nb_power: float, mix: float
    ) -> tuple[np.ndarray, float]:
        scale = nb_scale(X, y, w, self.nb_columns, nb_power, self.nb_alpha)
        if nb_power == 0.0:
            coef, intercept = _fit_linear(X, y, w, C, self.random_state)
        else:
            coef, intercept = _fit_linear(X @ sp.diags(scale), y, w, C, self.random_state)
            coef = coef * scale
        if mix > 0.0 and self.nb_columns > 0:
            r = nb_log_ratio(X, y, w, self.nb_columns, self.nb_alpha)
            z_nb = X[:, : self.nb_columns] @ r
            spread = float(np.std(z_nb))
            if spread > 0.0:
                lam = mix / (1.0 - mix) * float(np.std(X @ coef)) / spread
                coef = coef.copy()
                coef[: self.nb_columns] += lam * r
        return coef, intercept

    def decision_function(self, X: Any) -> np.ndarray:
        """Calibrated logit."""
        a, b = self.calibration_
        return np.asarray(a * (X @ self.coef_ + self.intercept_) + b).ravel()

    def predict_proba(self, X: Any) -> np.ndarray:
        p = _sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) >= 0).astype(np.int64)

    def predict_categories(self, X: Any) -> np.ndarray:
        """Probability per category head, shape (n, len(category_names_))."""
        if len(self.category_names_) == 0:
            return np.zeros((X.shape[0], 0))
        raw = np.asarray((sp.csr_matrix(X) @ self.category_coef_.T).todense())
        raw = raw + self.category_params_[:, 0]
        return _sigmoid(self.category_params_[:, 1] * raw + self.category_params_[:, 2])

"""Saving and loading model artifacts with skops, trusting an explicit list of types only."""

from __future__ import annotations

import zipfile
from pathlib import Path

import skops.io as sio
from sklearn.pipeline import Pipeline

# Types beyond skops' defaults that a Bouncer artifact may contain. Anything else in a file is refused.
TRUSTED_TYPES = (
    "classifiers.features.CommentPreparer",
    "classifiers.features.FieldSelector",
    "classifiers.features.NumericFeatures",
    "classifiers.model.ModerationClassifier",
    "scipy.sparse._csr.csr_matrix",
)

ARTIFACT = "model.skops"
MANIFEST = "manifest.json"


class UntrustedArtifactError(ValueError):
    """The artifact holds types outside ``TRUSTED_TYPES``: it is not loaded."""


def save_pipeline(pipeline: Pipeline, path: Path | str) -> None:
    """Write ``pipeline`` to ``path`` (zip-compressed skops)."""
    sio.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=6)


def load_pipeline(path: Path | str) -> Pipeline:
    """Load an artifact without executing code from it; refuse any type outside ``TRUSTED_TYPES``."""
    untrusted = set(sio.get_untrusted_types(file=path))
    unexpected = sorted(untrusted - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedArtifactError(f"{path}: refusing to load untrusted types {unexpected}")
    obj = sio.load(path, trusted=sorted(untrusted))
    if not isinstance(obj, Pipeline):
        raise UntrustedArtifactError(f"{path}: expected a Pipeline, found {type(obj).__name__}")
    return obj

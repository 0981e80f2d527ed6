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


class ArtifactError(ValueError):
    """An artifact or its manifest cannot be used (corrupt, tampered, unreadable): the message names the file."""


class UntrustedArtifactError(ArtifactError):
    """The artifact holds types outside ``TRUSTED_TYPES``: it is not loaded."""


def save_pipeline(pipeline: Pipeline, path: Path | str) -> None:
    """Write ``pipeline`` to ``path`` (zip-compressed skops)."""
    sio.dump(pipeline, path, compression=zipfile.ZIP_DEFLATED, compresslevel=6)


def load_pipeline(path: Path | str) -> Pipeline:
    """Load an artifact without executing code from it; refuse any type outside ``TRUSTED_TYPES``."""
    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except OSError:
        raise
    except Exception as exc:  # not a zip, no schema, cut short: skops raises what the zip or JSON reader raised
        raise ArtifactError(f"{path}: not a readable skops artifact ({type(exc).__name__}: {exc})") from exc
    unexpected = sorted(untrusted - set(TRUSTED_TYPES))
    if unexpected:
        raise UntrustedArtifactError(f"{path}: refusing to load untrusted types {unexpected}")
    try:
        obj = sio.load(path, trusted=sorted(untrusted))
    except OSError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: not a readable skops artifact ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Pipeline):
        raise UntrustedArtifactError(f"{path}: expected a Pipeline, found {type(obj).__name__}")
    return obj

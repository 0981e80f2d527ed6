"""Bouncer's spam and abuse classifiers: a pure library (no web or queue imports).

Typical use::

    registry = ModelRegistry("var/models")
    score = registry.active("spam").score([CommentInput(text="Buy cheap pills at http://x.xyz")])[0]
"""

from classifiers.comment import KINDS, CommentInput, ModelScore, Thresholds
from classifiers.data import Dataset, load_any, load_csv, load_jsonl, load_wxr
from classifiers.pipeline import build_pipeline
from classifiers.registry import LoadedModel, ModelInfo, ModelRegistry, NothingToRollBack
from classifiers.training import choose_operating_point, evaluate, train_model

__all__ = [
    "KINDS",
    "CommentInput",
    "Dataset",
    "LoadedModel",
    "ModelInfo",
    "ModelRegistry",
    "ModelScore",
    "NothingToRollBack",
    "Thresholds",
    "build_pipeline",
    "choose_operating_point",
    "evaluate",
    "load_any",
    "load_csv",
    "load_jsonl",
    "load_wxr",
    "train_model",
]

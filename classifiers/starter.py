"""Reproduce the starter models: ``python -m classifiers.starter [--data-dir ../shared/data]``.

Trains each kind on its recipe (``classifiers.base_data``: training-allowed files only, data README), writes
``classifiers/starter_models/<kind>/<version>/`` and regenerates ``MODEL_CARD.md`` with the measured metrics,
including the evaluation-only files (never trained on).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from classifiers.base_data import BASE_TRAINING, load_base_training
from classifiers.data import DEFAULT_DATA_DIR, load_csv
from classifiers.registry import STARTER_DIR, ModelRegistry
from classifiers.training import evaluate, train_model

# Evaluation only (never trained on): file and the split reported.
EVAL_FILES = {
    "spam": [("spam/youtube-extra.csv", "all")],
    "abuse": [
        ("abuse/olid.csv", "test"),
        ("abuse/hateval.csv", "test"),
        ("abuse/hatecheck.csv", "all"),
        ("abuse/stormfront.csv", "test"),
    ],
}


def build_starter(kind: str, data_dir: Path, out_dir: Path = STARTER_DIR) -> tuple[str, dict[str, Any]]:
    """Train, register into ``out_dir/<kind>`` (replacing older starters) and return version + eval report."""
    pipeline, manifest = train_model(kind, load_base_training(kind, data_dir))
    for f in manifest["data"]:
        f["path"] = str(Path(f["path"]).relative_to(data_dir))  # no machine paths in a committed manifest
    kind_dir = out_dir / kind
    if kind_dir.exists():
        shutil.rmtree(kind_dir)
    registry = ModelRegistry(out_dir, seed_starter=False)
    version = registry.register(kind, pipeline, manifest)
    model = registry.load(kind, version)
    report: dict[str, Any] = {}
    for name, split in EVAL_FILES[kind]:
        result = evaluate(model, load_csv(data_dir / name, split))
        report[f"{Path(name).stem} ({split})"] = result
    # Keep only the model directory: the registry pointer is created when a registry seeds from it.
    for extra in (kind_dir / "active.json", kind_dir / ".lock"):
        extra.unlink(missing_ok=True)
    manifest_path = kind_dir / version / "manifest.json"
    stored = json.loads(manifest_path.read_text())
    stored["evaluation_only"] = {
        k: {m: v[m] for m in ("n", "positives", "roc_auc", "pr_auc", "operating_point")} for k, v in report.items()
    }
    manifest_path.write_text(json.dumps(stored, indent=2, sort_keys=True))
    return version, report


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
)
@click.option("--kind", "kinds", multiple=True, type=click.Choice(sorted(BASE_TRAINING)), default=("spam", "abuse"))
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=STARTER_DIR,
    show_default=True,
    help="Write here instead (build in a scratch directory, then move the kind directories into place).",
)
def main(data_dir: Path, kinds: tuple[str, ...], out_dir: Path) -> None:
    """Rebuild the committed starter models and their model card."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        version, report = build_starter(kind, data_dir, out_dir)
        (out_dir / kind / version / "evaluation_only.json").write_text(json.dumps(report, indent=2))
        click.echo(f"{kind}: {version}")
    from classifiers.model_card import write_model_card

    write_model_card(out_dir)


if __name__ == "__main__":
    main()

"""Click commands ``train``, ``evaluate`` and ``models`` (attached to the ``bouncer`` group by the service).

The registry root is ``ctx.obj["models_dir"]`` when the parent group sets it, else ``$BOUNCER_MODELS_DIR``, else
``$BOUNCER_DATA_DIR/models`` (default ``./var/models``): the service's defaults, read without importing the service.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from classifiers.comment import KINDS
from classifiers.data import SPLITS, Dataset, load_any
from classifiers.misspell import misspelt
from classifiers.registry import ModelRegistry
from classifiers.training import evaluate as evaluate_model
from classifiers.training import train_model

kind_option = click.option("--kind", type=click.Choice(KINDS), required=True, help="Which model.")


def models_dir() -> Path:
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if isinstance(ctx.obj, dict) and ctx.obj.get("models_dir"):
            return Path(ctx.obj["models_dir"])
        ctx = ctx.parent
    if os.environ.get("BOUNCER_MODELS_DIR"):
        return Path(os.environ["BOUNCER_MODELS_DIR"]).expanduser()
    return Path(os.environ.get("BOUNCER_DATA_DIR") or "./var").expanduser() / "models"


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=str))


def _registry_message(exc: Exception) -> str:
    # str(KeyError("x")) is "'x'": show the message, not its repr
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _load(paths: tuple[str, ...]) -> Dataset:
    try:
        return Dataset.concat([load_any(p) for p in paths])
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot read data: {exc}") from exc


data_option = click.option(
    "--data",
    "data",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Labelled file (.csv shared schema, .jsonl, WordPress .xml); repeat for several.",
)


@click.command()
@kind_option
@data_option
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Registry root (default: the configured one)."
)
@click.option("--promote", is_flag=True, help="Make the new version active right away.")
def train(kind: str, data: tuple[str, ...], out: str | None, promote: bool) -> None:
    """Train on the train rows, pick thresholds on dev, evaluate on test, register a version."""
    dataset = _load(data)
    try:
        pipeline, manifest = train_model(kind, [dataset])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    registry = ModelRegistry(out or models_dir())
    version = registry.register(kind, pipeline, manifest, status="active" if promote else "candidate")
    _echo_json(
        {
            "kind": kind,
            "version": version,
            "status": "active" if promote else "candidate",
            "registry": str(registry.root),
            "thresholds": manifest["thresholds"],
            "training_seconds": manifest["training_seconds"],
            "rows": manifest["rows"],
            "test": {
                s: {k: m[k] for k in ("n", "positives", "roc_auc", "pr_auc", "operating_point")}
                for s, m in manifest["metrics"].get("test", {}).items()
            },
        }
    )


@click.command()
@kind_option
@data_option
@click.option(
    "--split", type=click.Choice([*SPLITS, "all"]), default="test", show_default=True, help="Rows of this split."
)
@click.option("--model", "version", default=None, help="Model version (default: the active one).")
@click.option(
    "--misspell",
    "misspell_rate",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Score the comments with this share of their words of four or more letters misspelt (a swap, drop, double "
    "or vowel change; the same for the same text): how much typos cost the model. Not on rows it trained on.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate(
    kind: str, data: tuple[str, ...], split: str, version: str | None, misspell_rate: float | None, as_json: bool
) -> None:
    """Metrics of a model on labelled data: ROC-AUC, PR-AUC, F1, Brier and the operating point."""
    registry = ModelRegistry(models_dir())
    try:
        model = registry.load(kind, version) if version else registry.active(kind)
    except (LookupError, ValueError) as exc:  # LookupError: no such version; ValueError: corrupt or refused
        raise click.ClickException(_registry_message(exc)) from exc
    rows = _load(data)
    dataset = rows.split(split)
    if len(dataset) == 0:
        found = ", ".join(f"{rows.splits.count(s)} {s}" for s in SPLITS if s in rows.splits) or "no rows"
        raise click.ClickException(
            f"no rows in split {split!r} (found {found}; rows without a split are split 80/10/10 by a hash of their"
            " text); --split all evaluates every row"
        )
    result: dict[str, Any] = {"kind": kind, "model": model.version, "split": split, "data": list(data)}
    if misspell_rate is not None:
        dataset.comments = [replace(c, text=misspelt(c.text, misspell_rate)) for c in dataset.comments]
        result["misspelt_rate"] = misspell_rate
    result.update(evaluate_model(model, dataset, by_identity=kind == "abuse"))
    if as_json:
        click.echo(json.dumps(result, default=str))
        return
    op = result["operating_point"]
    click.echo(f"{model.version} on {', '.join(data)} [{split}]: n={result['n']} positives={result['positives']}")
    click.echo(
        f"  ROC-AUC {_shown(result['roc_auc'])}  PR-AUC {_shown(result['pr_auc'])}  F1 {result['f1']}  "
        f"Brier {result['brier']}"
    )
    click.echo(
        f"  approve < {op['approve_below']}, reject >= {op['reject_at']}: ham rejected {op['ham_rejected']:.2%}, "
        f"positives approved {op['positives_approved']:.2%}, held {op['held']:.2%}"
    )
    for group, m in result.get("by_identity", {}).items():
        bias = (
            f"  ROC-AUC {_shown(m['roc_auc'])}  BPSN {_shown(m['bpsn_roc_auc'])}  BNSP {_shown(m['bnsp_roc_auc'])}"
            if "roc_auc" in m
            else ""
        )
        clean = m["negatives_not_approved"]
        click.echo(
            f"  naming {'no group' if group == '(none)' else group}: n={m['n']} positives={m['positives']}{bias}"
            + (f"  clean held or rejected {clean:.2%}" if clean is not None else "")
        )


def _shown(metric: float | None) -> str:
    """A metric for the text report: ``n/a`` where the data cannot define it (a ranking metric on one class)."""
    return "n/a (one class only)" if metric is None else str(metric)


@click.group()
def models() -> None:
    """List, promote and roll back model versions."""


@models.command("list")
@kind_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_models(kind: str, as_json: bool) -> None:
    """Versions of a kind, newest first."""
    try:
        infos = ModelRegistry(models_dir()).versions(kind)
    except ValueError as exc:  # an unreadable pointer file
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(
            [
                {
                    "version": i.version,
                    "created_at": i.created_at,
                    "status": i.status,
                    "thresholds": {"approve_below": i.thresholds.approve_below, "reject_at": i.thresholds.reject_at},
                    "features_version": i.features_version,
                    "needs_retraining": i.needs_retraining,
                }
                for i in infos
            ]
        )
        return
    for i in infos:
        click.echo(
            f"{i.status:<13} {i.version}  {i.created_at}  approve<{i.thresholds.approve_below} "
            f"reject>={i.thresholds.reject_at}"
            + (f"  (features v{i.features_version}: retrain)" if i.needs_retraining else "")
        )


@models.command()
@kind_option
@click.argument("version")
def promote(kind: str, version: str) -> None:
    """Make VERSION the active model."""
    try:
        ModelRegistry(models_dir()).promote(kind, version)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(_registry_message(exc)) from exc
    click.echo(f"{kind}: {version} is active")


@models.command()
@kind_option
def rollback(kind: str) -> None:
    """Re-activate the previously active version."""
    try:
        version = ModelRegistry(models_dir()).rollback(kind)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(_registry_message(exc)) from exc
    click.echo(f"{kind}: rolled back to {version}")


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Bouncer classifiers (standalone entry point; the service attaches the same commands)."""
    ctx.ensure_object(dict)


cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(models)

if __name__ == "__main__":
    cli(sys.argv[1:])

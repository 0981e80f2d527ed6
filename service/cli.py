"""The ``bouncer`` command: one click group; each area adds its commands from its own module."""

from __future__ import annotations

import sys

import click

from service.config import ConfigError, settings


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Bouncer: self-hosted comment moderation and spam filtering."""
    try:
        cfg = settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc
    ctx.ensure_object(dict)
    ctx.obj["models_dir"] = cfg.models_dir


def _register() -> None:
    from classifiers.cli import evaluate, models, train
    from service.cli_admin import db, labels, personal_data, purge, sites, users
    from service.cli_run import beat, up, web, worker

    for command in (up, web, worker, beat, db, sites, users, labels, purge, personal_data, train, evaluate, models):
        main.add_command(command)


_register()

if __name__ == "__main__":
    sys.exit(main())

"""The ``bouncer`` command: one click group; each area adds its commands from its own module.

The modules are imported when one of their commands runs (or ``--help`` lists them), not when ``bouncer`` starts:
the model commands import scikit-learn, which took about 3 of the 4 seconds every ``bouncer sites list`` or
``bouncer users create`` waited before it did anything.
"""

from __future__ import annotations

import importlib
import sys

import click

from service.config import ConfigError, settings

# Command name -> the module that defines it (the attribute is the name with "-" as "_").
COMMAND_MODULES = {
    **dict.fromkeys(("up", "web", "worker", "beat"), "service.cli_run"),
    **dict.fromkeys(("db", "sites", "users", "labels", "purge", "personal-data"), "service.cli_admin"),
    **dict.fromkeys(("train", "evaluate", "models"), "classifiers.cli"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``COMMAND_MODULES`` when asked for (click's lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(module), cmd_name.replace("-", "_"))
        if not isinstance(command, click.Command):  # a wrong entry above, not a user's mistake
            raise TypeError(f"{module}.{cmd_name} is not a click command")
        return command


@click.group(cls=LazyGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Bouncer: self-hosted comment moderation and spam filtering."""
    try:
        cfg = settings()
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from exc
    ctx.ensure_object(dict)
    ctx.obj["models_dir"] = cfg.models_dir


if __name__ == "__main__":
    sys.exit(main())

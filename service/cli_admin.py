"""Administrative commands: ``bouncer db``, ``sites``, ``users``, ``labels``, ``purge`` (data retention) and
``personal-data`` (commenters' requests)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from service.db import session_scope
from service.models import Site, User, parse_id
from service.sites import KeysChanged, create_site, rotate_keys, set_active
from service.users import create_user


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """A missing schema or an unreachable database is a message, not a SQLAlchemy traceback."""
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        hint = " (run `bouncer db upgrade` first)" if "no such table" in reason or "does not exist" in reason else ""
        raise click.ClickException(f"database error: {reason}{hint}") from exc


class RowId(click.ParamType):
    """A row id on the command line, read by ``parse_id``: '١٢' or a number past the id column is a usage error,
    not a database error."""

    name = "id"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        parsed = parse_id(value)
        if parsed is None:
            self.fail(f"{value!r} is not an id (a whole number from 1 to 2**63-1)", param, ctx)
        return parsed


ROW_ID = RowId()


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations."""
    from service.migrate import upgrade

    with database_errors():
        upgrade()
    click.echo("database is up to date")


@click.group()
def sites() -> None:
    """Sites (blogs) and their API keys."""


@sites.command("create")
@click.option("--name", required=True)
@click.option("--url", required=True)
@click.option("--callback-url", default=None, help="Where decisions of held comments are sent (signed).")
def sites_create(name: str, url: str, callback_url: str | None) -> None:
    """Create a site; prints JSON with id, api_key, akismet_key and callback_secret (shown once)."""
    with database_errors(), session_scope() as session:
        try:
            site, keys = create_site(session, name, url, callback_url)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        out = {
            "id": site.id,
            "name": site.name,
            "url": site.url,
            "api_key": keys.api_key,
            "akismet_key": keys.akismet_key,
            "callback_url": site.callback_url,
            "callback_secret": site.callback_secret,
        }
    click.echo(json.dumps(out, indent=2))


@sites.command("list")
def sites_list() -> None:
    """List sites as JSON lines."""
    with database_errors(), session_scope() as session:
        for site in session.scalars(select(Site).order_by(Site.id)):
            click.echo(json.dumps({"id": site.id, "name": site.name, "url": site.url, "active": site.active}))


@sites.command("rotate-keys")
@click.argument("site_id", type=ROW_ID)
def sites_rotate(site_id: int) -> None:
    """Issue new API and Akismet keys for a site; the old ones stop working at once.

    Fails, changing nothing, if another admin rotates the site's keys at the same moment (theirs stand).
    """
    with database_errors(), session_scope() as session:
        site = session.get(Site, site_id)
        if site is None:
            raise click.ClickException(f"no site with id {site_id}")
        try:
            keys = rotate_keys(session, site)
        except KeysChanged as exc:  # another admin's rotation came first: theirs stand, these were never stored
            raise click.ClickException(
                "the keys were rotated by someone else meanwhile; nothing was changed "
                f"(`bouncer sites rotate-keys {site_id}` again replaces theirs)"
            ) from exc
    click.echo(json.dumps({"id": site_id, "api_key": keys.api_key, "akismet_key": keys.akismet_key}, indent=2))


def _set_site_active(site_id: int, active: bool) -> None:
    with database_errors(), session_scope() as session:
        site = session.get(Site, site_id)
        if site is None:
            raise click.ClickException(f"no site with id {site_id}")
        cancelled = set_active(session, site, active)
    click.echo(json.dumps({"id": site_id, "active": active, "callbacks_cancelled": cancelled}))


@sites.command("deactivate")
@click.argument("site_id", type=ROW_ID)
def sites_deactivate(site_id: int) -> None:
    """Stop a site: its keys stop working (within seconds in every process) and its pending callbacks are cancelled;
    its comments and labels stay."""
    _set_site_active(site_id, False)


@sites.command("activate")
@click.argument("site_id", type=ROW_ID)
def sites_activate(site_id: int) -> None:
    """Let a deactivated site's keys work again; callbacks cancelled meanwhile are not sent."""
    _set_site_active(site_id, True)


@click.group()
def users() -> None:
    """Moderators and admins."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(["moderator", "admin"]), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--site", "site_ids", type=ROW_ID, multiple=True, help="Assign a moderator to this site id.")
def users_create(email: str, role: str, password_stdin: bool, site_ids: tuple[int, ...]) -> None:
    """Create a user; without --password-stdin a password is generated and printed once."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with database_errors(), session_scope() as session:
        try:
            user, generated = create_user(session, email, role, password)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        for site_id in site_ids:
            site = session.get(Site, site_id)
            if site is None:
                raise click.ClickException(f"no site with id {site_id}")
            user.sites.append(site)
        out = {"id": user.id, "email": user.email, "role": user.role}
    if generated:
        out["password"] = generated
    click.echo(json.dumps(out, indent=2))


@users.command("disable-2fa")
@click.argument("email")
def users_disable_2fa(email: str) -> None:
    """Turn a user's two-factor sign-in off (a lost phone and lost recovery codes); the user's sessions end."""
    from service.auth.session import end_user_sessions
    from service.auth.two_factor import disable, is_enabled

    with database_errors(), session_scope() as session:
        user = session.scalars(select(User).where(User.email == email.strip().lower())).first()
        if user is None:
            raise click.ClickException(f"no user with e-mail {email}")
        was_on = is_enabled(user)
        disable(session, user)
        end_user_sessions(session, user.id)
        out = {"id": user.id, "email": user.email, "two_factor": "turned off" if was_on else "was off"}
    click.echo(json.dumps(out, indent=2))


@click.group()
def labels() -> None:
    """Training labels: a site's moderation history."""


@labels.command("import")
@click.option("--site", "site_id", type=ROW_ID, required=True, help="The site whose history this is.")
@click.option(
    "--positive",
    type=click.Choice(["spam", "abuse"]),
    default="spam",
    show_default=True,
    help="What label 1 means (a WordPress export's spam is spam; its approved comments are ham).",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def labels_import(site_id: int, positive: str, files: tuple[str, ...]) -> None:
    """Import moderated comments (WordPress WXR export, CSV or JSON Lines) as decided comments with labels.

    An unreadable file or an invalid row stops the import before anything is stored. Importing a file again adds
    nothing (and completes an interrupted import). Prints a JSON summary; retrain to learn from the labels.
    """
    from classifiers import Dataset, load_any
    from classifiers.data import DataError
    from service.history_import import HistoryError, import_history

    try:
        data = Dataset.concat([load_any(path) for path in files])
    except (DataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    actor = "cli: " + ", ".join(Path(path).name for path in files)
    with database_errors(), session_scope() as session:
        site = session.get(Site, site_id)
        if site is None:
            raise click.ClickException(f"no site with id {site_id}")
        try:
            summary = import_history(session, site, data, positive, actor[:200])
        except HistoryError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"site": site_id, "files": list(files), **summary.as_dict()}, indent=2))


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
def purge(dry_run: bool) -> None:
    """Apply the data retention settings now (BOUNCER_RETAIN_*), as the hourly task does, to the end.

    Deletes automatic rejects no human confirmed and finished callback deliveries, erases the personal data of old
    comments. Prints JSON: how many rows of each kind were (or with --dry-run would be) removed, and the cut-offs.
    """
    from service.retention import purge as run_purge

    with database_errors():
        result = run_purge(dry_run=dry_run)
    click.echo(json.dumps(result.as_dict(), indent=2))


@click.group("personal-data")
def personal_data() -> None:
    """A commenter's personal data on request, by e-mail address: export (access) or erase (to be forgotten)."""


def _site_and_address(session: Session, site_id: int, email: str) -> str:
    """The address as the API takes it (trimmed, with an @), for a site that exists."""
    from pydantic import ValidationError

    from service.api.schemas import PersonalDataIn

    try:
        address = PersonalDataIn(email=email).email
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"].removeprefix("Value error, "), param_hint="--email") from exc
    if session.get(Site, site_id) is None:
        raise click.ClickException(f"no site with id {site_id}")
    return address


@personal_data.command("export")
@click.option("--site", "site_id", type=ROW_ID, required=True)
@click.option("--email", required=True, help="The commenter's e-mail address (any case).")
def personal_data_export(site_id: int, email: str) -> None:
    """Print what the site's comments from this address hold about their author, a JSON line per comment."""
    from service.personal_data import export_all

    with database_errors(), session_scope() as session:
        for record in export_all(session, site_id, _site_and_address(session, site_id, email)):
            click.echo(json.dumps(record))


@personal_data.command("erase")
@click.option("--site", "site_id", type=ROW_ID, required=True)
@click.option("--email", required=True, help="The commenter's e-mail address (any case).")
def personal_data_erase(site_id: int, email: str) -> None:
    """Erase the author's name, e-mail, website, IP, user agent, referrer and meta from the site's comments from
    this address (their text, decisions and labels stay); prints how many comments held them."""
    from service.personal_data import erase

    with database_errors(), session_scope() as session:
        erased = erase(session, site_id, _site_and_address(session, site_id, email))
    click.echo(json.dumps({"site": site_id, "erased": erased}))

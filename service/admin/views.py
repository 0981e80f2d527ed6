"""Admin pages. Keys and generated passwords are shown once, in the answer to the POST that made them."""

from __future__ import annotations

import re
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from classifiers import NothingToRollBack
from service.admin import bp, models_page
from service.admin.thresholds import KINDS, Thresholds, model_defaults, preview
from service.auth import two_factor
from service.auth.session import admin_required, end_user_sessions, require_user, set_password, this_session_token
from service.db import session_scope
from service.decisions.rules import domain_of
from service.ips import ZoneIdError, canonical_entry
from service.models import Comment, ListEntry, Role, Site, User, UserSite, parse_id
from service.security import new_callback_secret
from service.sites import KeysChanged, SiteKeys, create_site, http_url, keys_version, rotate_keys, set_active
from service.users import MIN_PASSWORD_LENGTH, create_user

LIST_ACTIONS = ("allow", "block")
LIST_KINDS = ("email", "ip", "domain", "author", "phrase")


@bp.errorhandler(403)
def _forbidden(_exc: Exception) -> ResponseReturnValue:
    return render_template("error.html", code=403, message="The admin console is for admins."), 403


def _http_url(raw: str, name: str, required: bool = False) -> str | None:
    return http_url(raw, name, required)  # the one rule for site URLs (service.sites), shared with the CLI


@bp.route("/")
@admin_required
def index() -> ResponseReturnValue:
    return redirect(url_for("admin.sites"))


# --- sites ---------------------------------------------------------------------------------------------------


def _sites_page(keys: SiteKeys | None = None, new_site: Site | None = None, status: int = 200) -> ResponseReturnValue:
    with session_scope() as db:
        sites = list(db.scalars(select(Site).order_by(Site.name, Site.id)))
        counts = dict(
            db.execute(
                select(Comment.site_id, func.count()).where(Comment.decision == "hold").group_by(Comment.site_id)
            )
            .tuples()
            .all()
        )
        return (
            render_template("admin/sites.html", sites=sites, held=counts, keys=keys, new_site=new_site, title="Sites"),
            status,
        )


@bp.route("/sites")
@admin_required
def sites() -> ResponseReturnValue:
    """Every site with its held count; a form to add one."""
    return _sites_page()


@bp.route("/sites", methods=["POST"])
@admin_required
def sites_create() -> ResponseReturnValue:
    """Create a site; its keys are shown in this answer only."""
    name = request.form.get("name", "").strip()
    try:
        if not name or len(name) > 200:
            raise ValueError("a name (up to 200 characters) is required")
        url = _http_url(request.form.get("url", ""), "the site URL", required=True) or ""
        callback = _http_url(request.form.get("callback_url", ""), "the callback URL")
    except ValueError as exc:
        flash(str(exc), "warning")
        return _sites_page(status=400)
    with session_scope() as db:
        site, keys = create_site(db, name, url, callback)
    return _sites_page(keys=keys, new_site=site, status=201)


def _site_page(site_id: int, keys: SiteKeys | None = None, status: int = 200) -> ResponseReturnValue:
    with session_scope() as db:
        site = db.get(Site, site_id)
        if site is None:
            abort(404)
        thresholds = Thresholds.of_site(site)
        entries = list(
            db.scalars(
                select(ListEntry)
                .where(ListEntry.site_id == site_id)
                .order_by(ListEntry.action, ListEntry.kind, ListEntry.value)
            )
        )
        return (
            render_template(
                "admin/site.html",
                site=site,
                keys=keys,
                thresholds=thresholds,
                defaults=model_defaults(),
                kinds=KINDS,
                preview=preview(db, site_id, thresholds),
                entries=entries,
                list_actions=LIST_ACTIONS,
                list_kinds=LIST_KINDS,
                keys_version=keys_version(site),
                title=site.name,
            ),
            status,
        )


@bp.route("/sites/<int:site_id>")
@admin_required
def site(site_id: int) -> ResponseReturnValue:
    """A site's settings: details, callback, keys, thresholds with preview, allow/block lists."""
    return _site_page(site_id)


@bp.route("/sites/<int:site_id>", methods=["POST"])
@admin_required
def site_update(site_id: int) -> ResponseReturnValue:
    """Name, URL, callback URL, active. Deactivating ends the site's pending callbacks unsent (``set_active``)."""
    try:
        name = request.form.get("name", "").strip()
        if not name or len(name) > 200:
            raise ValueError("a name (up to 200 characters) is required")
        url = _http_url(request.form.get("url", ""), "the site URL", required=True) or ""
        callback = _http_url(request.form.get("callback_url", ""), "the callback URL")
    except ValueError as exc:
        flash(str(exc), "warning")
        return _site_page(site_id, status=400)
    with session_scope() as db:
        site = db.get(Site, site_id) or abort(404)
        site.name, site.url, site.callback_url = name, url, callback
        ended = set_active(db, site, request.form.get("active") == "on")
    flash("Site saved.", "success")
    if ended:
        flash(f"{ended} pending callback(s) to the deactivated site were cancelled, not sent.", "info")
    return redirect(url_for("admin.site", site_id=site_id))


@bp.route("/sites/<int:site_id>/rotate-keys", methods=["POST"])
@admin_required
def site_rotate_keys(site_id: int) -> ResponseReturnValue:
    """New API and Akismet keys; the old ones stop working at once. Shown in this answer only.

    The form names the keys it replaces (``keys_version``): if another admin rotated them since this page was shown,
    or rotates them at the same moment, nothing changes and the admin is told to reload (409), never shown keys
    that are not the stored ones.
    """
    replacing = request.form.get("replacing", "")
    if not replacing:
        flash("This page is out of date: reload it and rotate the keys again.", "warning")
        return _site_page(site_id, status=400)
    try:
        with session_scope() as db:
            site = db.get(Site, site_id) or abort(404)
            keys = rotate_keys(db, site, replacing=replacing)
    except KeysChanged as exc:
        flash(f"Keys not rotated: {exc}.", "warning")
        return _site_page(site_id, status=409)
    flash("New keys issued. The old keys no longer work.", "success")
    return _site_page(site_id, keys=keys)


@bp.route("/sites/<int:site_id>/callback-secret", methods=["POST"])
@admin_required
def site_callback_secret(site_id: int) -> ResponseReturnValue:
    """A new secret for signing callbacks; the blog must be given it."""
    with session_scope() as db:
        site = db.get(Site, site_id) or abort(404)
        site.callback_secret = new_callback_secret()
    flash("New callback secret. Update it on the blog.", "success")
    return redirect(url_for("admin.site", site_id=site_id) + "#callback")


@bp.route("/sites/<int:site_id>/thresholds", methods=["POST"])
@admin_required
def site_thresholds(site_id: int) -> ResponseReturnValue:
    try:
        thresholds = Thresholds.parse(request.form)
    except ValueError as exc:
        flash(str(exc), "warning")
        return _site_page(site_id, status=400)
    with session_scope() as db:
        site = db.get(Site, site_id) or abort(404)
        thresholds.apply_to(site)
    flash("Thresholds saved.", "success")
    return redirect(url_for("admin.site", site_id=site_id) + "#thresholds")


@bp.route("/sites/<int:site_id>/preview")
@admin_required
def site_preview(site_id: int) -> ResponseReturnValue:
    """JSON: how the site's last comments would split under the thresholds in the query string."""
    try:
        thresholds = Thresholds.parse(request.args)
    except ValueError as exc:
        return jsonify(error={"code": "invalid", "message": str(exc)}), 400
    with session_scope() as db:
        if db.get(Site, site_id) is None:
            abort(404)
        return jsonify(preview(db, site_id, thresholds))


def _is_host(value: str) -> bool:
    """A host name or the tail of one (``example``, ``spam.example``, ``bücher.example``): labels of 1–63 word
    characters or hyphens, no spaces, slashes, ``@`` or ports."""
    labels = value.split(".")
    return 0 < len(value) <= 253 and all(re.fullmatch(r"[\w-]{1,63}", label) for label in labels)


def list_value(kind: str, raw: str) -> str:
    """The entry as the rules match it, or ValueError saying why it could never match anything.

    Matching ignores case and surrounding space (``rules.ListMatcher``), so values are stored stripped and in
    lower case and compared so: ``Spammer`` and `` spammer`` are one entry. An IP must be an address or a
    network; a domain may be pasted as a URL (its host is kept, without ``www.``, which the rules drop from hosts
    too); an e-mail entry is an address or ``@domain``.
    """
    value = raw.strip()
    if not value or len(value) > 500:
        raise ValueError("a value (up to 500 characters) is required")
    if kind == "ip":
        try:
            return canonical_entry(value)  # ::ffff:203.0.113.7 is kept as 203.0.113.7, which it matches
        except ZoneIdError:
            raise
        except ValueError:
            example = "e.g. 203.0.113.7 or 203.0.113.0/24"
            raise ValueError(f"'{value}' is not an IP address or network ({example})") from None
    value = value.lower()
    if kind == "domain":
        host = domain_of(value) if "/" in value or ":" in value else value.removeprefix("www.")
        host = host.removeprefix("*.").strip(".")
        if not _is_host(host):
            raise ValueError(f"'{value}' is not a domain (e.g. spam.example)")
        return host
    if kind == "email":
        _local, at, domain = value.rpartition("@")
        if not at or " " in value or not _is_host(domain):
            raise ValueError(f"'{value}' is not an e-mail address or @domain")
    return value


@bp.route("/sites/<int:site_id>/lists", methods=["POST"])
@admin_required
def list_add(site_id: int) -> ResponseReturnValue:
    action, kind = request.form.get("action", ""), request.form.get("kind", "")
    note = request.form.get("note", "").strip()[:500]
    back = redirect(url_for("admin.site", site_id=site_id) + "#lists")
    if action not in LIST_ACTIONS or kind not in LIST_KINDS:
        flash("Choose allow or block, a kind, and a value (up to 500 characters).", "warning")
        return back
    try:
        value = list_value(kind, request.form.get("value", ""))
    except ValueError as exc:
        flash(f"Not added: {exc}.", "warning")
        return back
    duplicate = False
    try:
        with session_scope() as db:
            if db.get(Site, site_id) is None:
                abort(404)
            same = select(ListEntry.id).where(
                ListEntry.site_id == site_id,
                ListEntry.action == action,
                ListEntry.kind == kind,
                func.lower(func.trim(ListEntry.value)) == value,  # also entries stored before values were normalised
            )
            duplicate = db.scalars(same).first() is not None
            if not duplicate:
                db.add(ListEntry(site_id=site_id, action=action, kind=kind, value=value, note=note))
    except IntegrityError:  # the same entry added by a concurrent request
        duplicate = True
    if duplicate:
        flash(f"'{value}' is already on the {action} list.", "info")
    else:
        flash(f"Added '{value}' to the {action} list.", "success")
    return back


@bp.route("/sites/<int:site_id>/lists/<int:entry_id>/delete", methods=["POST"])
@admin_required
def list_delete(site_id: int, entry_id: int) -> ResponseReturnValue:
    with session_scope() as db:
        db.execute(delete(ListEntry).where(ListEntry.id == entry_id, ListEntry.site_id == site_id))
    flash("Entry removed.", "success")
    return redirect(url_for("admin.site", site_id=site_id) + "#lists")


# --- users ---------------------------------------------------------------------------------------------------


def _users_page(created: dict[str, Any] | None = None, status: int = 200) -> ResponseReturnValue:
    with session_scope() as db:
        users = list(db.scalars(select(User).order_by(User.email)))
        sites = list(db.scalars(select(Site).order_by(Site.name)))
        return render_template(
            "admin/users.html", users=users, sites=sites, created=created, roles=[r.value for r in Role], title="Users"
        ), status


def _site_ids(raw: list[str]) -> set[int]:
    """The site ids of a form's checkboxes; a value that cannot be an id names no site."""
    return {sid for sid in map(parse_id, raw) if sid is not None}


@bp.route("/users")
@admin_required
def users() -> ResponseReturnValue:
    """Users, their roles and sites."""
    return _users_page()


@bp.route("/users", methods=["POST"])
@admin_required
def users_create() -> ResponseReturnValue:
    """Create a user; a generated password is shown in this answer only."""
    password = request.form.get("password") or None
    site_ids = _site_ids(request.form.getlist("sites"))
    try:
        with session_scope() as db:
            user, generated = create_user(db, request.form.get("email", ""), request.form.get("role", ""), password)
            for sid in sorted(site_ids):
                if db.get(Site, sid) is not None:
                    db.add(UserSite(user_id=user.id, site_id=sid))
            created = {"email": user.email, "password": generated}
    except ValueError as exc:
        flash(str(exc), "warning")
        return _users_page(status=400)
    flash(f"User {created['email']} created.", "success")
    return _users_page(created=created, status=201)


@bp.route("/users/<int:user_id>")
@admin_required
def user(user_id: int) -> ResponseReturnValue:
    with session_scope() as db:
        found = db.get(User, user_id) or abort(404)
        sites = list(db.scalars(select(Site).order_by(Site.name)))
        assigned = set(db.scalars(select(UserSite.site_id).where(UserSite.user_id == user_id)))
        return render_template(
            "admin/user.html",
            user=found,
            sites=sites,
            assigned=assigned,
            roles=[r.value for r in Role],
            min_password=MIN_PASSWORD_LENGTH,
            title=found.email,
        )


@bp.route("/users/<int:user_id>", methods=["POST"])
@admin_required
def user_update(user_id: int) -> ResponseReturnValue:
    """Role, active, assigned sites, unlock. An admin cannot demote or deactivate themselves (no lock-out).
    Deactivating ends the user's sessions: reactivating later does not bring them back."""
    me = require_user()
    role = request.form.get("role", "")
    active = request.form.get("active") == "on"
    if role not in {r.value for r in Role}:
        abort(400, "unknown role")
    if user_id == me.id and (role != Role.ADMIN or not active):
        flash("You cannot remove your own admin role or deactivate yourself.", "warning")
        return redirect(url_for("admin.user", user_id=user_id))
    site_ids = _site_ids(request.form.getlist("sites"))
    with session_scope() as db:
        found = db.get(User, user_id) or abort(404)
        found.role, found.active = role, active
        if not active:
            end_user_sessions(db, user_id)
        if request.form.get("unlock") == "on":
            found.failed_logins, found.locked_until = 0, None
        db.execute(delete(UserSite).where(UserSite.user_id == user_id))
        known = set(db.scalars(select(Site.id).where(Site.id.in_(sorted(site_ids)))))
        for sid in sorted(known):
            db.add(UserSite(user_id=user_id, site_id=sid))
    flash("User saved.", "success")
    return redirect(url_for("admin.user", user_id=user_id))


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@admin_required
def user_password(user_id: int) -> ResponseReturnValue:
    """Set a new password (typed, or generated and shown once); the user's sessions end (an admin setting their own
    ends their other sessions and stays signed in here)."""
    import secrets

    typed = request.form.get("password", "")
    password = typed or secrets.token_urlsafe(12)
    if len(password) < MIN_PASSWORD_LENGTH:
        flash(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.", "warning")
        return redirect(url_for("admin.user", user_id=user_id))
    own = user_id == require_user().id
    with session_scope() as db:
        found = db.get(User, user_id) or abort(404)
        set_password(db, found, password, own=own)
        email = found.email
    created = {"email": email, "password": None if typed else password}
    flash(f"New password set for {email}.", "success")
    return _users_page(created=created)


@bp.route("/users/<int:user_id>/two-factor/off", methods=["POST"])
@admin_required
def user_two_factor_off(user_id: int) -> ResponseReturnValue:
    """Turn a user's two-factor sign-in off (a lost phone and lost recovery codes); the user's sessions end (an admin
    doing it for themselves stays signed in here)."""
    own = user_id == require_user().id
    with session_scope() as db:
        found = db.get(User, user_id) or abort(404)
        two_factor.disable(db, found)
        end_user_sessions(db, user_id, keep_token=this_session_token() if own else None)
        email = found.email
    flash(f"Two-factor sign-in turned off for {email}.", "success")
    return redirect(url_for("admin.user", user_id=user_id))


# --- models --------------------------------------------------------------------------------------------------


@bp.route("/models")
@admin_required
def models() -> ResponseReturnValue:
    """Model versions of each kind, their metrics and the active one."""
    with session_scope() as db:
        return render_template(
            "admin/models.html",
            kinds=models_page.overview(),
            runs=models_page.recent_runs(db),
            headline=models_page.HEADLINE_METRICS,
            title="Models",
            **models_page.models_page_extra(),
        )


@bp.route("/models/<kind>/promote", methods=["POST"])
@admin_required
def models_promote(kind: str) -> ResponseReturnValue:
    version = request.form.get("version", "")
    if kind not in KINDS or not version:
        abort(400)
    try:
        models_page.promote(kind, version)
    except Exception as exc:  # the registry says why (unknown version, artifact failed to load): show it
        flash(f"Could not promote {kind} {version}: {exc}", "warning")
    else:
        flash(f"{kind} model {version} is now active.", "success")
    return redirect(url_for("admin.models"))


@bp.route("/models/<kind>/rollback", methods=["POST"])
@admin_required
def models_rollback(kind: str) -> ResponseReturnValue:
    if kind not in KINDS:
        abort(400)
    try:
        version = models_page.rollback(kind)
    except NothingToRollBack:  # the button is not shown then, but a stale page or a second admin may post
        flash(f"There is no earlier {kind} model to roll back to.", "info")
    except Exception as exc:  # the registry says why (the earlier version failed to load): show it
        flash(f"Could not roll back the {kind} model: {exc}", "warning")
    else:
        flash(f"{kind} model rolled back to {version}.", "success")
    return redirect(url_for("admin.models"))

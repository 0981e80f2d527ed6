"""Moderation pages and actions. Every view is login-only and scoped to the user's sites."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from flask import abort, flash, jsonify, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from service.auth.session import _safe_next, login_required, require_user, wants_json
from service.db import session_scope
from service.models import Comment, parse_id
from service.moderation import bp, queries, text
from service.moderation.actions import ACTION_LABELS, UNDO_SECONDS, ActionResult, Forbidden, moderate, undo

text.register(bp)

MAX_BULK = 500


@bp.errorhandler(Forbidden)
def _forbidden(_exc: Forbidden) -> ResponseReturnValue:
    if wants_json():
        return jsonify(error={"code": "forbidden", "message": "not one of your sites"}), 403
    return render_template("error.html", code=403, message="This comment belongs to a site you do not moderate."), 403


@bp.errorhandler(403)
def _http_forbidden(_exc: Exception) -> ResponseReturnValue:
    return _forbidden(Forbidden())


def _list_page(default_status: str, template_title: str) -> ResponseReturnValue:
    user = require_user()
    filters = queries.ListFilters.from_args(request.args, default_status)
    with session_scope() as db:
        page = queries.list_comments(db, user, filters)
        sites = queries.visible_sites(db, user)
        return render_template(
            "moderation/list.html",
            page=page,
            f=page.filters,
            sites=sites,
            title=template_title,
            endpoint=request.endpoint,
            undo_events=_pending_undo(),
            undo_seconds=UNDO_SECONDS,
        )


@bp.route("/")
@login_required
def queue() -> ResponseReturnValue:
    """The held comments, newest (or most uncertain) first."""
    return _list_page("hold", "Queue")


@bp.route("/all")
@login_required
def all_comments() -> ResponseReturnValue:
    """Every comment, any decision: where a wrong automatic decision is found and reversed."""
    return _list_page("all", "All comments")


@bp.route("/comments/<int:comment_id>")
@login_required
def detail(comment_id: int) -> ResponseReturnValue:
    """One comment: full text, every field, its history and its author's other comments."""
    user = require_user()
    with session_scope() as db:
        comment = db.get(Comment, comment_id)
        if comment is None:
            abort(404)
        if not user.may_see_site(comment.site_id):
            raise Forbidden(comment_id)
        others = queries.other_comments_of_author(db, user, comment)
        events = queries.comment_events(db, comment.id)
        return render_template(
            "moderation/detail.html",
            c=comment,
            events=events,
            actor_names=queries.actor_names(db, {e.actor for e in events} | {comment.decided_by or ""}),
            others=others,
            history=queries.author_history(db, [comment]).get(comment.id),
            campaign_size=queries.campaign_sizes(db, user, [comment]).get(comment.campaign_key or "", 0),
            undo_events=_pending_undo(),
            undo_seconds=UNDO_SECONDS,
            title=f"Comment #{comment.id}",
        )


@bp.route("/campaigns/<key>")
@login_required
def campaign(key: str) -> ResponseReturnValue:
    """The comments that share one campaign key (near-duplicates found by the stream checks)."""
    user = require_user()
    with session_scope() as db:
        members = queries.campaign_members(db, user, key)
        if not members:
            abort(404)
        return render_template(
            "moderation/campaign.html",
            key=key,
            members=members,
            history=queries.author_history(db, members),
            undo_events=_pending_undo(),
            undo_seconds=UNDO_SECONDS,
            title="Campaign",
        )


def _parse_items(form: Any) -> tuple[str, list[tuple[int, str]]]:
    """(action, [(comment id, decision seen)]) from a row button (``one=ID:ACTION``) or a bulk submit."""
    one = form.get("one", "")
    if one:
        raw_id, _, action = one.partition(":")
        raw_ids = [raw_id]
    else:
        action = form.get("action", "")
        raw_ids = form.getlist("ids")
    if action not in ACTION_LABELS:
        abort(400, "unknown action")
    items = []
    for raw in raw_ids[:MAX_BULK]:
        comment_id = parse_id(raw)
        if comment_id is not None:
            items.append((comment_id, form.get(f"seen_{raw}", "")))
    return action, items


def _answer(results: Sequence[ActionResult], back: str) -> ResponseReturnValue:
    events = [r.event_id for r in results if r.applied and r.event_id is not None]
    if wants_json():
        return jsonify(
            results=[
                {
                    "id": r.comment_id,
                    "applied": r.applied,
                    "message": r.message,
                    "decision": r.decision,
                    "category": r.category,
                    "unchanged": r.unchanged,
                }
                for r in results
            ],
            undo={"events": events, "seconds": UNDO_SECONDS},
        )
    applied = [r for r in results if r.applied]
    if applied:
        noun = "comment" if len(applied) == 1 else "comments"
        flash(f"{len(applied)} {noun} {applied[0].message}.", "success")
    unchanged = [r for r in results if r.unchanged]
    if unchanged:
        noun = "comment was" if len(unchanged) == 1 else "comments were"
        flash(f"{len(unchanged)} {noun} {unchanged[0].message}.", "info")
    for r in results:
        if not r.applied and not r.unchanged:
            flash(f"Comment #{r.comment_id}: {r.message}.", "warning")
    if events:
        session["undo"] = {"events": events, "at": time.time()}
    return redirect(back)


def _back() -> str:
    return _safe_next(request.form.get("next")) or url_for("moderation.queue")


@bp.route("/act", methods=["POST"])
@login_required
def act() -> ResponseReturnValue:
    """Approve / reject as spam / reject as abuse one comment (``one``) or the selected ones (``ids``)."""
    action, items = _parse_items(request.form)
    if not items:
        if wants_json():
            return jsonify(error={"code": "nothing_selected", "message": "select at least one comment"}), 400
        flash("Select at least one comment.", "warning")
        return redirect(_back())
    return _answer(moderate(require_user(), items, action), _back())


@bp.route("/campaigns/<key>/reject", methods=["POST"])
@login_required
def reject_campaign(key: str) -> ResponseReturnValue:
    """Reject every visible member of a campaign that is not rejected yet, as spam or abuse."""
    user = require_user()
    action = request.form.get("category", "spam")
    if action not in ("spam", "abuse"):
        abort(400, "category must be spam or abuse")
    with session_scope() as db:
        members = queries.campaign_members(db, user, key, limit=MAX_BULK)
        items = [(c.id, c.decision or "") for c in members if c.status == "decided" and c.decision != "reject"]
    if not items:
        if wants_json():
            return jsonify(results=[], undo={"events": [], "seconds": UNDO_SECONDS})
        flash("Every comment of this campaign is already rejected.", "info")
        return redirect(_back())
    return _answer(moderate(user, items, action), _back())


@bp.route("/undo", methods=["POST"])
@login_required
def undo_last() -> ResponseReturnValue:
    """Undo this user's last action (a few seconds only)."""
    raw = request.form.getlist("event")
    event_ids = [e for e in map(parse_id, raw) if e is not None][:MAX_BULK]
    session.pop("undo", None)
    results = undo(require_user(), event_ids)
    if wants_json():
        return jsonify(
            results=[
                {
                    "id": r.comment_id,
                    "applied": r.applied,
                    "message": r.message,
                    "decision": r.decision,
                    "category": r.category,
                }
                for r in results
            ]
        )
    done = sum(r.applied for r in results)
    flash(f"Undone: {done} comment{'s' if done != 1 else ''}.", "success" if done else "warning")
    for r in results:
        if not r.applied:
            flash(f"Comment #{r.comment_id}: {r.message}.", "warning")
    return redirect(_back())


def _pending_undo() -> list[int]:
    """Event ids of this session's last action while it can still be undone (for pages without JavaScript)."""
    pending = session.get("undo")
    if not isinstance(pending, dict) or time.time() - float(pending.get("at", 0)) > UNDO_SECONDS:
        return []
    return [int(e) for e in pending.get("events", []) if isinstance(e, int)]

"""The admin console's page of a site's commenters' requests: look up an e-mail address, download its export as
JSON, erase its personal data (``service.personal_data``, as the API and ``bouncer personal-data`` do).

Every step is a POST with the address in the body (and a CSRF token), never in the URL: a query string ends up in
access logs and the browser's history. An inactive site's page works too: its keys no longer reach the API, so the
console is where an admin can still honour a commenter's request.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, make_response, render_template, request
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from service.admin import bp
from service.api.schemas import PersonalDataIn
from service.auth.session import admin_required, require_user
from service.db import session_scope
from service.models import Site, parse_id
from service.personal_data import EXPORT_PAGE_SIZE, comment_count, erase, export_all, export_page

log = logging.getLogger(__name__)

MAX_PAGE = 1_000_000  # as the API's export


def _address(raw: str) -> str:
    """The address as the API takes it (``PersonalDataIn``: trimmed, with an @, at most 320 characters), or
    ValueError saying why it is not one."""
    try:
        return PersonalDataIn(email=raw).email
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "string_too_long":
            reason = f"must be at most {error.get('ctx', {}).get('max_length')} characters long"
        else:
            reason = error["msg"].removeprefix("Value error, ")
        raise ValueError(f"Not an address to look up: it {reason}.") from None


def _site_or_404(site_id: int) -> dict[str, Any]:
    with session_scope() as db:
        site = db.get(Site, site_id) or abort(404)
        return {"id": site.id, "name": site.name, "active": site.active}


def _page(site: dict[str, Any], status: int = 200, **shown: Any) -> ResponseReturnValue:
    title = f"Personal data · {site['name']}"
    return render_template("admin/personal_data.html", site=site, title=title, **shown), status


def _site_and_address(site_id: int) -> tuple[dict[str, Any], str]:
    """The site (404 if none) and the address the form sent; the page with the form's error (400) if it is none."""
    site = _site_or_404(site_id)
    raw = request.form.get("email", "")
    try:
        return site, _address(raw)
    except ValueError as exc:
        abort(make_response(_page(site, 400, email=raw, error=str(exc))))


def _found(site: dict[str, Any], address: str, page: int = 1, status: int = 200, **shown: Any) -> ResponseReturnValue:
    """The page with a page of the address's records (as the export gives them), their count and the erase form."""
    with session_scope() as db:
        records, last = export_page(db, site["id"], address, page)
        total = comment_count(db, site["id"], address)
    shown.update(email=address, records=records, total=total, page=page, last=last, page_size=EXPORT_PAGE_SIZE)
    return _page(site, status, **shown)


@bp.route("/sites/<int:site_id>/personal-data")
@admin_required
def site_personal_data(site_id: int) -> ResponseReturnValue:
    """A form for a commenter's e-mail address."""
    return _page(_site_or_404(site_id))


@bp.route("/sites/<int:site_id>/personal-data", methods=["POST"])
@admin_required
def site_personal_data_lookup(site_id: int) -> ResponseReturnValue:
    """The site's comments from the address, a page of the export at a time, with their count."""
    site, address = _site_and_address(site_id)
    page = min(parse_id(request.form.get("page", "1")) or 1, MAX_PAGE)
    return _found(site, address, page)


@bp.route("/sites/<int:site_id>/personal-data/export", methods=["POST"])
@admin_required
def site_personal_data_export(site_id: int) -> ResponseReturnValue:
    """Download everything the export finds for the address (all its pages) as one JSON file."""
    _, address = _site_and_address(site_id)  # 404 for no site
    with session_scope() as db:
        comments = list(export_all(db, site_id, address))
    body = {"site": site_id, "email": address, "exported_at": datetime.now(UTC).isoformat(), "comments": comments}
    # The file name holds no address: response headers end up in logs more often than bodies.
    name = f"personal-data-site-{site_id}-{datetime.now(UTC):%Y%m%d}.json"
    return Response(
        json.dumps(body, ensure_ascii=False, indent=2),
        mimetype="application/json",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@bp.route("/sites/<int:site_id>/personal-data/erase", methods=["POST"])
@admin_required
def site_personal_data_erase(site_id: int) -> ResponseReturnValue:
    """Erase the address's personal data from the site's comments, once the admin typed the address again."""
    site, address = _site_and_address(site_id)
    if request.form.get("confirm", "").strip().lower() != address.lower():
        confirm_error = "Nothing was erased: type the same e-mail address again to confirm."
        return _found(site, address, status=400, confirm_error=confirm_error)
    with session_scope() as db:
        erased = erase(db, site_id, address)
    log.info("user %d erased a commenter's personal data on site %d (admin console)", require_user().id, site_id)
    return _found(site, address, erased=erased)

"""Signed callbacks to the blog: one delivery per decision event, retried with backoff, given up after N tries.

An inactive site gets none: no delivery is written for its decisions, its pending ones end when it is deactivated
(``service.sites.set_active``), and one found pending at its attempt anyway is given up unsent.

The delivery row is written in the same transaction as the decision (an outbox), so a callback is never lost
between the commit and the queue; the HTTP call happens in a worker task.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Literal

import anyio
import anyio.to_thread
import httpx
from sqlalchemy import and_, func, or_, select, update

from service.config import settings
from service.db import session_scope
from service.models import CallbackDelivery, Comment, ModerationEvent
from service.security import sign
from service.sites import SITE_DEACTIVATED
from service.views import comment_view

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Bouncer-Signature"
USER_AGENT = "Bouncer-Callback/1"
Attempt = Literal["delivered", "retry", "gave_up", "nothing_to_do"]


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff: 2, 4, 8, ... seconds, capped at 10 minutes."""
    return float(min(600, 2**attempts))


class RefusedDestination(Exception):
    """The callback URL's host is not a public address, and BOUNCER_CALLBACK_ALLOW_PRIVATE is off."""


def resolve(url: httpx.URL, *, public_only: bool) -> list[str]:
    """The addresses to deliver ``url`` to, in the resolver's order; with ``public_only``, only if every one of
    them is public (RefusedDestination otherwise).

    A callback URL pointing at loopback, a private network or link-local (cloud metadata at 169.254.169.254) would
    turn Bouncer into a proxy into its own network (SSRF), so those are refused unless the operator allows them.
    """
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = [
        ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    ]
    if not addresses:
        raise RefusedDestination(f"{url.host} resolves to no address")
    refused = [a for a in addresses if not a.is_global] if public_only else []
    if refused:
        raise RefusedDestination(
            f"{url.host} resolves to {refused[0]}, not a public address (BOUNCER_CALLBACK_ALLOW_PRIVATE=true allows it)"
        )
    return list(dict.fromkeys(str(a) for a in addresses))  # once each (one per socket type and protocol)


class DeadlineExceeded(Exception):
    """The receiver's status did not come within the attempt's deadline (BOUNCER_CALLBACK_TIMEOUT_SECONDS)."""


def post_status(url: str, body: bytes, headers: dict[str, str], *, pin_public: bool, deadline: float) -> int:
    """POST ``body`` to ``url`` and return the answer's status; raises DeadlineExceeded ``deadline`` seconds on.

    The deadline bounds the whole attempt (DNS, connect, TLS, sending, the status line and headers): httpx's own
    timeouts bound each read or write alone, so a receiver sending its headers a byte at a time could hold a worker
    for as long as it likes. The host's addresses are tried in turn until one connects (``resolve``; with
    ``pin_public`` only when every one is public): an address that refuses or does not answer the connection moves
    on to the next, an HTTP answer of any status is the attempt's answer.
    """
    return anyio.run(
        _post_status, url, body, headers, pin_public, deadline, backend_options={"loop_factory": _event_loop}
    )


async def _post_status(url: str, body: bytes, headers: dict[str, str], pin_public: bool, deadline: float) -> int:
    ends_at = anyio.current_time() + deadline
    with anyio.move_on_after(deadline):
        target = httpx.URL(url)
        # Bouncer resolves the name itself and connects to the very addresses it checked (no second lookup a
        # rebinding DNS could answer differently); the Host header and TLS name stay the URL's. At the deadline, a
        # lookup still running is left to finish.
        addresses = await anyio.to_thread.run_sync(
            lambda: resolve(target, public_only=pin_public), abandon_on_cancel=True
        )
        async with httpx.AsyncClient(timeout=None, follow_redirects=False) as client:
            for i, address in enumerate(addresses):
                # No timeout on reads or writes: the deadline around them all is the one limit. Connecting gets its
                # share of the time left, so that an address that does not answer leaves time for the next ones.
                left = len(addresses) - i
                share = (ends_at - anyio.current_time()) / left
                try:
                    async with client.stream(
                        "POST",
                        target.copy_with(host=address),
                        content=body,
                        headers={"Host": target.netloc.decode("ascii"), **headers},
                        extensions={"sni_hostname": target.host},
                        timeout=httpx.Timeout(None, connect=share if left > 1 else None),
                    ) as response:
                        # The answer is the status alone: the body is never read, so an endless one cannot hold
                        # the worker.
                        return response.status_code
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    if left == 1:
                        raise
                    log.info("callback to %s: %s did not connect, trying the next address", target.host, address)
    raise DeadlineExceeded(f"deadline of {deadline:g} s exceeded")


class _LookupExecutor(ThreadPoolExecutor):
    """The event loop's executor, where a lookup in the loop would run (httpx gets addresses, not names, from
    ``resolve`` now; kept as the guard): the loop closes at the deadline without waiting for a lookup still running
    (getaddrinfo cannot be interrupted); its thread ends on its own."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)


def _event_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_LookupExecutor(thread_name_prefix="callback-lookup"))
    return loop


def build_body(comment: Comment, event: ModerationEvent | None, delivery_id: int, sequence: int) -> bytes:
    """The callback's JSON: ``comment`` is the comment's state when the body is built (every attempt anew), and
    ``sequence`` grows with every change of that state, so a receiver keeps the highest and drops the rest."""
    payload = {
        "event": "comment.decided" if event is None or event.action == "decide" else "comment.moderated",
        "delivery_id": delivery_id,
        "sequence": sequence,
        "action": event.action if event else "decide",
        "actor": event.actor if event else "model",
        "comment": comment_view(comment),
    }
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")


def attempt_delivery(delivery_id: int) -> tuple[Attempt, int]:
    """Try one delivery; returns the outcome and the number of attempts so far."""
    cfg = settings()
    now = datetime.now(UTC)
    with session_scope() as session:
        # Claim the attempt: only one task proceeds when it is due, so a duplicate retry chain sends nothing. The
        # claim outlasts the attempt's deadline (post_status) by 30 s, so no second attempt starts while one runs.
        claimed = session.execute(
            update(CallbackDelivery)
            .where(
                CallbackDelivery.id == delivery_id,
                CallbackDelivery.status == "pending",
                CallbackDelivery.next_attempt_at <= now + timedelta(seconds=1),
            )
            .values(next_attempt_at=now + timedelta(seconds=cfg.callback_timeout_seconds + 30))
        )
        delivery = session.get(CallbackDelivery, delivery_id)
        if delivery is None or claimed.rowcount != 1:  # type: ignore[attr-defined]  # CursorResult
            return "nothing_to_do", delivery.attempts if delivery else 0
        # The comment's newest event id, read before the comment itself: a change committed between the two
        # reads then shows in the body under an older sequence, never the other way round.
        sequence = session.scalar(
            select(func.max(ModerationEvent.id)).where(ModerationEvent.comment_id == delivery.comment_id)
        )
        comment = session.get(Comment, delivery.comment_id)
        event = session.get(ModerationEvent, delivery.event_id) if delivery.event_id else None
        if comment is not None and not comment.site.active:
            # Also a delivery written after the deactivation ended the site's pending ones (its decision's
            # transaction read the site while it was still active): nothing goes out once the site is inactive.
            delivery.status = "failed"
            delivery.last_error = SITE_DEACTIVATED
            return "gave_up", delivery.attempts
        if comment is None or not comment.site.callback_url:
            delivery.status = "failed"
            delivery.last_error = "the site has no callback URL any more"
            return "gave_up", delivery.attempts
        url, secret = comment.site.callback_url, comment.site.callback_secret
        body = build_body(comment, event, delivery.id, sequence or 0)
        attempts = delivery.attempts

    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: f"t={timestamp},v1={sign(secret, timestamp, body)}",
    }
    error = ""
    try:
        status = post_status(
            url, body, headers, pin_public=not cfg.callback_allow_private, deadline=cfg.callback_timeout_seconds
        )
        if 200 <= status < 300:
            outcome: Attempt = "delivered"
        else:
            error = f"HTTP {status}"
            outcome = "retry"
    except DeadlineExceeded as exc:
        error = str(exc)
        outcome = "retry"
    except (httpx.HTTPError, OSError, RefusedDestination) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        outcome = "retry"

    attempts += 1
    now = datetime.now(UTC)
    values: dict[str, object] = {"attempts": attempts, "last_error": error}
    if outcome == "delivered":
        values.update(status="delivered", delivered_at=now)
    elif attempts >= cfg.callback_max_attempts:
        outcome = "gave_up"
        values.update(status="failed")
        log.warning("callback %s given up after %s attempts: %s", delivery_id, attempts, error)
    else:
        values.update(next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)))
    still_ours = CallbackDelivery.status == "pending"
    if outcome == "delivered":
        # The site was deactivated while this attempt was on its way (which ended the delivery as not sent): the
        # blog did get it, and the record says so.
        still_ours = or_(
            still_ours, and_(CallbackDelivery.status == "failed", CallbackDelivery.last_error == SITE_DEACTIVATED)
        )
    with session_scope() as session:
        session.execute(update(CallbackDelivery).where(CallbackDelivery.id == delivery_id, still_ours).values(**values))
    return outcome, attempts


def overdue_deliveries(limit: int = 500) -> list[int]:
    """Pending deliveries whose retry is long overdue (the queued retry was lost)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=settings().sweep_after_seconds)
    with session_scope() as session:
        return list(
            session.scalars(
                select(CallbackDelivery.id)
                .where(CallbackDelivery.status == "pending", CallbackDelivery.next_attempt_at < cutoff)
                .order_by(CallbackDelivery.id)
                .limit(limit)
            )
        )

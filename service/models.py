"""Database tables. Status fields are small explicit enums; state changes are conditional updates elsewhere."""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.config import settings

# 64-bit ids on PostgreSQL (a busy network of blogs outgrows 2^31 comments); SQLite needs INTEGER for its rowid
# alias (autoincrement), and its INTEGER is 64-bit anyway.
ID = BigInteger().with_variant(Integer(), "sqlite")
MAX_ID = 2**63 - 1
_MAX_ID_DIGITS = len(str(MAX_ID))
# Tables whose rows get deleted (retention purge and its cascades, an admin) and whose ids are seen outside the row
# (API answers, callbacks, Akismet, audit log, UI forms, "labels after id N") take ids by SQLite's AUTOINCREMENT:
# without it SQLite gives max(id) + 1, so the id of a deleted newest row goes to the next. PostgreSQL's sequences never
# go back. Not here: tables whose rows stay (sites, users, retrain_runs) or whose ids nobody sees (user_sessions:
# the cookie names a token).
NO_ID_REUSE: dict[str, Any] = {"sqlite_autoincrement": True}


def parse_id(value: object) -> int | None:
    """The row id a user-supplied value names, or None when it cannot name a row (treated as "no such row").

    Only ASCII digits, no sign or whitespace, 1..MAX_ID: ``int()`` and ``str.isdigit()`` also take '١٢', ' 7',
    '+7' or '²', and a number past the 64-bit id column is a DataError on PostgreSQL, not an empty answer.
    """
    if not isinstance(value, str) or not value or len(value) > _MAX_ID_DIGITS:
        return None
    if not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class CommentStatus(enum.StrEnum):
    PENDING = "pending"  # stored, waiting for the scorer
    DECIDED = "decided"  # has a decision (automatic or human)


class Decision(enum.StrEnum):
    APPROVE = "approve"
    HOLD = "hold"
    REJECT = "reject"


class Category(enum.StrEnum):
    SPAM = "spam"
    ABUSE = "abuse"


class Role(enum.StrEnum):
    MODERATOR = "moderator"
    ADMIN = "admin"


class Site(Base):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000))
    # API keys are random and long, so a fast hash (sha256) is safe and lets us look them up by hash.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    akismet_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    # Kept readable: the service must sign callbacks with it (HMAC), so it cannot be hashed.
    callback_secret: Mapped[str] = mapped_column(String(200))
    # Thresholds; NULL means "the active model's own operating point".
    spam_approve_below: Mapped[float | None] = mapped_column(Float)
    spam_reject_at: Mapped[float | None] = mapped_column(Float)
    abuse_approve_below: Mapped[float | None] = mapped_column(Float)
    abuse_reject_at: Mapped[float | None] = mapped_column(Float)
    max_links: Mapped[int] = mapped_column(Integer, default=2)
    # How much the reject bar rises for an author with an approved comment on the site (0 disables it).
    trusted_author_leniency: Mapped[float] = mapped_column(Float, default=0.15)
    # Akismet clients: a held comment answers "spam" (true) by default, or "ham" when this is off.
    akismet_hold_is_spam: Mapped[bool] = mapped_column(Boolean, default=True)
    # Per-site settings of the stream checks (campaign/velocity); empty means defaults.
    stream_settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # An inactive site's keys stop working and it gets no callbacks: it may have been retired or changed hands.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def sends_callbacks(self) -> bool:
        """Whether decisions go back to the blog: the site has a callback URL and is active."""
        return bool(self.callback_url) and bool(self.active)


class ListEntry(Base):
    """An allow- or blocklist entry of a site; an allow entry beats a block entry."""

    __tablename__ = "list_entries"
    __table_args__ = (UniqueConstraint("site_id", "action", "kind", "value"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(10))  # allow | block
    kind: Mapped[str] = mapped_column(String(20))  # email | ip | domain | author | phrase
    value: Mapped[str] = mapped_column(String(500))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (
        UniqueConstraint("site_id", "external_id"),
        Index("ix_comments_status_received", "status", "received_at"),
        Index("ix_comments_site_decision_received", "site_id", "decision", "received_at"),
        # The retention purge finds the old comments whose personal data is still there without a scan.
        Index("ix_comments_erased_received", "personal_data_erased_at", "received_at"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"))
    external_id: Mapped[str | None] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    author_name: Mapped[str] = mapped_column(String(500), default="")
    author_email: Mapped[str] = mapped_column(String(500), default="")
    author_url: Mapped[str] = mapped_column(String(2000), default="")
    author_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(1000), default="")
    post_url: Mapped[str] = mapped_column(String(2000), default="")
    post_title: Mapped[str] = mapped_column(String(1000), default="")
    post_excerpt: Mapped[str] = mapped_column(Text, default="")
    post_published_at: Mapped[datetime | None] = mapped_column()
    type: Mapped[str] = mapped_column(String(40), default="comment")
    parent_external_id: Mapped[str | None] = mapped_column(String(200))
    lang: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime | None] = mapped_column()  # when the blog says it was written
    referrer: Mapped[str] = mapped_column(String(2000), default="")
    honeypot: Mapped[str] = mapped_column(String(1000), default="")
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    is_test: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(20), default="api")  # api | akismet | import

    status: Mapped[str] = mapped_column(String(20), default=CommentStatus.PENDING)
    decision: Mapped[str | None] = mapped_column(String(20))  # current disposition
    category: Mapped[str | None] = mapped_column(String(20))  # spam | abuse when rejected/held for a reason
    auto_decision: Mapped[str | None] = mapped_column(String(20))  # what the automatic path decided
    decided_by: Mapped[str | None] = mapped_column(String(40))  # worker | web | moderator:<id> | blog
    spam_score: Mapped[float | None] = mapped_column(Float)
    abuse_score: Mapped[float | None] = mapped_column(Float)
    reasons: Mapped[list[Any]] = mapped_column(default=list)
    categories: Mapped[dict[str, Any]] = mapped_column(default=dict)  # abuse sub-categories
    model_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    campaign_key: Mapped[str | None] = mapped_column(String(64), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column()
    moderated_at: Mapped[datetime | None] = mapped_column()
    enqueue_count: Mapped[int] = mapped_column(Integer, default=0)
    # When the retention purge erased the author's IP, user agent and referrer and pseudonymised the e-mail.
    personal_data_erased_at: Mapped[datetime | None] = mapped_column()

    site: Mapped[Site] = relationship(lazy="joined")


# An author is known by e-mail, and e-mail addresses compare case-insensitively: every lookup goes through
# author_email_in(), whose expression is the one indexed here (the site second: the detail page spans sites).
Index("ix_comments_author_email_lower", func.lower(Comment.author_email), Comment.site_id)


def author_email_in(emails: Iterable[str]) -> ColumnElement[bool]:
    """Comments whose author e-mail is one of ``emails``, whatever the case, or its erased form (an index lookup)."""
    wanted = sorted({e.strip() for e in emails} | {erased_email(e) for e in emails if e.strip()})
    # lower() in SQL on both sides: each database folds case its own way (SQLite: ASCII only), the same on each side
    return func.lower(Comment.author_email).in_([func.lower(e) for e in wanted])


def email_key(email: str) -> str:
    """An author e-mail as Python compares it, to group the rows ``author_email_in`` found: an address (trimmed,
    any case) and its erased form have the same key."""
    return erased_email(email) if email.strip() else ""


_ERASED = re.compile(r"erased-[0-9a-f]{32}@.*", re.DOTALL)


def is_erased_email(email: str) -> bool:
    return _ERASED.fullmatch(email.strip().lower()) is not None


def erased_email(email: str) -> str:
    """What the retention purge keeps of an author e-mail: a keyed digest of the address and its domain.

    The digest still finds the author's other comments (trusted author, author history) but cannot be read back
    without the secret key; the domain keeps what the models learn from an address (free, disposable, corporate
    mail and its TLD). An address that already is erased stays as it is, so erasing twice changes nothing.
    """
    key = email.strip().lower()
    if is_erased_email(key):
        return key
    digest = hmac.new(settings().secret_key.encode(), b"author-email\0" + key.encode(), hashlib.sha256)
    local, at, domain = key.rpartition("@")
    # An address the models read as invalid (no single @, no dot in the domain) stays invalid to them.
    valid = bool(at) and "@" not in local and "." in domain
    return f"erased-{digest.hexdigest()[:32]}@{domain[:400] if valid else 'invalid'}"


class ModerationEvent(Base):
    """The audit log: every change of a comment's disposition, who made it, from what to what."""

    __tablename__ = "moderation_events"
    # The admin's activity log (service.admin.activity) reads them newest first, by time and id, all of them or a
    # site's or an actor's, within dates if asked: each of these indexes walks one of those a page at a time. The
    # site's also serves the lookups by site_id alone (a site's deletion cascades here).
    __table_args__ = (
        Index("ix_moderation_events_created_id", "created_at", "id"),
        Index("ix_moderation_events_site_created_id", "site_id", "created_at", "id"),
        Index("ix_moderation_events_actor_created_id", "actor", "created_at", "id"),
        NO_ID_REUSE,
    )

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    comment_id: Mapped[int] = mapped_column(ID, ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(200))  # "model", "web", "user:<id>", "blog", "akismet", "import"
    action: Mapped[str] = mapped_column(String(40))  # decide | approve | reject | undo | feedback | import
    from_decision: Mapped[str | None] = mapped_column(String(20))
    to_decision: Mapped[str | None] = mapped_column(String(20))
    category: Mapped[str | None] = mapped_column(String(20))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Label(Base):
    """A human-confirmed training label. A later label for the same comment supersedes the earlier one."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_comment_created", "comment_id", "created_at"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    comment_id: Mapped[int | None] = mapped_column(ID, ForeignKey("comments.id", ondelete="CASCADE"))
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(10))  # spam | ham | abuse
    source: Mapped[str] = mapped_column(String(20))  # moderator | blog | akismet | import
    actor: Mapped[str] = mapped_column(String(200), default="")
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default=Role.MODERATOR)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Two-factor sign-in (service.auth.two_factor): the TOTP secret, encrypted (Fernet, keyed from the secret key);
    # the one being enrolled until a code confirms it; when it was turned on; and the last time step a code was
    # accepted for, so that no code signs in twice.
    totp_secret: Mapped[str | None] = mapped_column(String(300))
    totp_pending_secret: Mapped[str | None] = mapped_column(String(300))
    totp_enabled_at: Mapped[datetime | None] = mapped_column()
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)

    sites: Mapped[list[Site]] = relationship(secondary="user_sites", lazy="selectin")


class RecoveryCode(Base):
    """A single-use code that stands in for a TOTP code (a lost phone); only its sha256 is stored, and it is deleted
    when used."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    user_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UserSite(Base):
    """Which sites a moderator may see and act on (admins see all)."""

    __tablename__ = "user_sites"

    user_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)


class UserSession(Base):
    """One signed-in browser. The session cookie carries a random token naming this row (only its sha256 is
    stored); signing out ends the row, so a copy of the cookie no longer signs anybody in."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column()


class CallbackDelivery(Base):
    """One callback to a blog: attempts, last error, and whether it was delivered or given up."""

    __tablename__ = "callback_deliveries"
    # The retention purge finds finished deliveries by age without a scan.
    __table_args__ = (Index("ix_callback_deliveries_status_created", "status", "created_at"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    comment_id: Mapped[int] = mapped_column(ID, ForeignKey("comments.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"))
    # Indexed: deleting a comment cascades to its events and from each event to here (the retention purge).
    event_id: Mapped[int | None] = mapped_column(ID, ForeignKey("moderation_events.id", ondelete="CASCADE"), index=True)
    # pending | delivered | failed (given up: attempts ran out, no callback URL any more, or the site deactivated)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(1000), default="")
    # When the next try is due; the sweeper only re-enqueues deliveries well past it (a lost retry).
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()


class DeletedRejectCount(Base):
    """How many automatic rejects of a site the retention purge deleted, by the day (UTC) they were received.

    Akismet's get-stats counts a site's spam over months and years; the purge keeps them for days. These totals
    let the statistics outlive the comments (service.akismet.stats).
    """

    __tablename__ = "deleted_reject_counts"

    site_id: Mapped[int] = mapped_column(ID, ForeignKey("sites.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    comments: Mapped[int] = mapped_column(Integer, default=0)


class RetrainRun(Base):
    """One retraining job of a model kind: progress, outcome and the evaluation report."""

    __tablename__ = "retrain_runs"
    # One retrain at a time, kept by the database (service.retraining.start_run): a run holds running_slot = 1 while
    # it runs and NULL otherwise, and this index admits one 1 (NULLs are distinct on SQLite and PostgreSQL alike).
    __table_args__ = (Index("uq_retrain_runs_running_slot", "running_slot", unique=True),)

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|promoted|needs_review|failed
    progress: Mapped[str] = mapped_column(String(200), default="")
    candidate_version: Mapped[str | None] = mapped_column(String(100))
    active_version: Mapped[str | None] = mapped_column(String(100))
    label_count: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The newest label id when step 1 read the labels it trains on (NULL until then, and on runs from before 0005):
    # the schedule counts labels stored after it as new, not labels dated after created_at, since a queued run
    # collects what arrived while it waited, and an imported label is dated by its comment, years back.
    last_label_id: Mapped[int | None] = mapped_column(ID)
    finished_at: Mapped[datetime | None] = mapped_column()
    # The running run's last sign of life, written by its worker every few seconds (NULL before it starts, and on
    # runs from before 0007): one whose heartbeat is older than retraining.DEAD_AFTER_SECONDS lost its worker.
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    running_slot: Mapped[int | None] = mapped_column(Integer)  # RUNNING_SLOT (1) while running, else NULL

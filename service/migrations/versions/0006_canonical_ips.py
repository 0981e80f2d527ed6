"""stored IP addresses in one spelling: comments' author_ip and IP list entries rewritten as service.ips wrote them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 20:00:00
"""

from __future__ import annotations

import ipaddress

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BATCH = 1000

_comments = sa.table("comments", sa.column("id", sa.Integer), sa.column("author_ip", sa.String))
_entries = sa.table(
    "list_entries",
    sa.column("id", sa.Integer),
    sa.column("site_id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("kind", sa.String),
    sa.column("value", sa.String),
    sa.column("note", sa.String),
)
NOTE_LENGTH = 500  # list_entries.note


# A frozen copy of service.ips.canonical_ip and canonical_entry as they were when this revision was written: a
# migration must rewrite rows the same way whatever service.ips becomes later. Do not "update" it; a new spelling
# needs a new revision.
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _ip(value: str) -> str:
    """The canonical spelling, or the value as it is when it is no address (or has a zone ID): left for a human."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return value
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return value
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
    return str(address)


def _entry(value: str) -> str:
    """The entry as service.admin.views.list_value stored it then; as it is when it is no address or network."""
    try:
        network: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return value
    if isinstance(network, ipaddress.IPv6Network):
        if network.network_address.scope_id is not None:
            return value
        if network.subnet_of(_IPV4_MAPPED):
            mapped = network.network_address.ipv4_mapped
            assert mapped is not None  # every address of ::ffff:0:0/96 is a mapped one
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    single = network.num_addresses == 1 and "/" not in value
    return str(network.network_address) if single else str(network)


def upgrade() -> None:
    # The other-comments-by-IP lookup and Akismet's submit-spam/ham compare author_ip exactly: a row stored as
    # '::ffff:1.2.3.4' before service.ips must read '1.2.3.4' like the rows stored since.
    conn = op.get_bind()
    after = 0
    while rows := conn.execute(
        sa.select(_comments.c.id, _comments.c.author_ip)
        .where(_comments.c.id > after, _comments.c.author_ip != "")
        .order_by(_comments.c.id)
        .limit(BATCH)
    ).all():
        changed = [{"row_id": id_, "ip": new} for id_, ip in rows if (new := _ip(ip)) != ip]
        if changed:
            conn.execute(
                _comments.update().where(_comments.c.id == sa.bindparam("row_id")).values(author_ip=sa.bindparam("ip")),
                changed,
            )
        after = rows[-1][0]

    # (site_id, action, kind, value) is unique: an old spelling whose canonical entry exists already is the same
    # entry twice (it matched the same addresses), so it is deleted rather than rewritten into a duplicate, its
    # note added to the kept entry's.
    after = 0
    while entries := conn.execute(
        sa.select(_entries.c.id, _entries.c.site_id, _entries.c.action, _entries.c.value, _entries.c.note)
        .where(_entries.c.id > after, _entries.c.kind == "ip")
        .order_by(_entries.c.id)
        .limit(BATCH)
    ).all():
        for id_, site_id, action, value, note in entries:
            new = _entry(value)
            if new == value:
                continue
            same = sa.and_(
                _entries.c.site_id == site_id,
                _entries.c.action == action,
                _entries.c.kind == "ip",
                _entries.c.value == new,
            )
            kept = conn.execute(sa.select(_entries.c.id, _entries.c.note).where(same)).first()
            if kept is not None:
                if note and note not in kept.note:  # the moderator's note on why is not lost with the duplicate
                    merged = f"{kept.note}; {note}" if kept.note else note
                    conn.execute(_entries.update().where(_entries.c.id == kept.id).values(note=merged[:NOTE_LENGTH]))
                conn.execute(_entries.delete().where(_entries.c.id == id_))
            else:
                conn.execute(_entries.update().where(_entries.c.id == id_).values(value=new))
        after = entries[-1][0]


def downgrade() -> None:
    # Nothing to undo: the old code reads canonical addresses as well as any other spelling, and which spelling a
    # row had before is not kept (nor worth keeping: it named the same address).
    pass

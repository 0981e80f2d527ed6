"""What a rule or check found about one comment, with the words shown to moderators and blogs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# approve: an explicit allow (beats everything); reject: a verdict; hold: at least hold for a human;
# lenient: raise the reject bar (trusted author); note: shown as a reason, no effect on the decision.
Effect = Literal["approve", "reject", "hold", "lenient", "note"]


@dataclass(frozen=True, slots=True)
class RuleHit:
    code: str  # stable machine name, e.g. "blocklist.email", "honeypot", "links", "campaign"
    effect: Effect
    reason: str  # human-readable, e.g. "author e-mail is on the site's blocklist"
    category: str | None = None  # spam | abuse, for reject/hold effects

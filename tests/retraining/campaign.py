"""A new spam campaign the starter model lets through (tech-support spam with obfuscated phone numbers) and ham.

Texts come from varied templates with a seeded random generator, so every run sees the same comments.
"""

from __future__ import annotations

import random

_OPENERS = [
    "Great article!",
    "Thanks for sharing.",
    "Very informative post.",
    "",
    "Nice write-up.",
    "So true.",
    "I agree with every word.",
    "Bookmarked!",
    "Wow.",
    "Helpful as always.",
]
_PROBLEMS = [
    "my printer kept showing offline",
    "QuickBooks error 6123 would not go away",
    "Outlook stopped syncing",
    "my Norton renewal failed",
    "a Windows update froze my laptop",
    "the router kept dropping wifi",
    "I could not log in to Coinbase",
    "a Cash App payment stayed pending",
    "my HP printer would not scan",
    "Gmail locked me out",
    "my Epson printer said error 0xE8",
    "Facebook disabled my account",
    "the McAfee subscription charged me twice",
    "my Roku would not activate",
    "Alexa lost its wifi setup",
]
_AGENTS = [
    "the support team",
    "a certified technician",
    "the helpdesk",
    "customer care",
    "their 24/7 experts",
    "a friendly agent",
    "the tech desk",
    "an expert",
]
_VERBS = [
    "sorted it out",
    "fixed everything",
    "solved it",
    "got it working again",
    "resolved the issue",
    "remotely repaired it",
]
_SPEED = ["in ten minutes", "in no time", "right away", "within minutes", "the same day", "over the phone"]
_CLOSERS = [
    "Really grateful to them.",
    "Sharing in case it helps someone here.",
    "Hope this helps others.",
    "Honestly saved my week.",
    "Keep up the good posts!",
    "Anyway, back to reading your blog.",
    "",
    "",
]
_SHAPES = [
    "{opener} Off topic, but last month {problem} and I was about to give up. I phoned {agent} on {phone} and they "
    "{verb} {speed}. {closer}",
    "{opener} This reminds me of when {problem}. A friend gave me the number of {agent}, {phone}, and they {verb} "
    "{speed}. {closer}",
    "{opener} In case anyone here has the same trouble ({problem}): {agent} on {phone} {verb} for me {speed}. {closer}",
    "{opener} I spent a whole weekend on this because {problem}, until {agent} ({phone}) {verb} {speed}. {closer}",
    "{opener} My neighbour told me that {agent} at {phone} {verb} {speed} when {problem}. {closer}",
]


def _phone(rng: random.Random) -> str:
    """A toll-free number, obfuscated the ways such campaigns use to slip past phone-number filters."""
    digits = rng.choice(["888", "844", "877", "866", "855", "800", "833"]) + f"{rng.randint(2000000, 9999999)}"
    area, mid, end = digits[:3], digits[3:6], digits[6:]
    shapes = [
        " ".join(digits),
        "-".join(digits),
        f"{area} {mid} {end[:2]} {end[2:]}",
        f"{area}-{mid[:2]}-{mid[2:]}{end[:1]}-{end[1:]}",
        f"{area}_{mid}_{end}",
        f"{area.replace('0', 'O')}-{mid.replace('0', 'O')}-{end.replace('0', 'O')}",
        f"{' '.join(area)} . {' '.join(mid)} . {' '.join(end)}",
    ]
    return rng.choice(shapes)


def campaign_comment(rng: random.Random) -> str:
    """One tech-support scam comment: a fake testimonial with a toll-free number."""
    problem = rng.choice(_PROBLEMS)
    agent = rng.choice(_AGENTS)
    text = rng.choice(_SHAPES).format(
        opener=rng.choice(_OPENERS),
        problem=problem,
        agent=agent,
        Agent=agent[0].upper() + agent[1:],
        phone=_phone(rng),
        verb=rng.choice(_VERBS),
        speed=rng.choice(_SPEED),
        closer=rng.choice(_CLOSERS),
    )
    return " ".join(text.split())


_HAM = [
    "I had the same {thing} problem last week; it turned out the driver was outdated and reinstalling it fixed it.",
    "Thanks for the post. We tried the {dish} recipe on Sunday and the kids loved it, though we used less salt.",
    "Could you say more about {topic}? I read your earlier post but I'm still unsure where to start.",
    "My grandmother grew {plant} on her balcony for years; she swore by coffee grounds in the soil.",
    "Interesting take on {topic}. I disagree a little: in my experience the second approach scales better.",
    "We visited {place} in {month} and it was quieter than expected. The museum was well worth the ticket.",
    "Small correction: the {thing} manual says to hold the reset button for 10 seconds, not 5.",
    "Lovely photos! Which lens did you use for the {place} shots?",
    "I called my {service} provider about the same outage and they said it would be fixed by {day}.",
    "This is the third time I read this post about {topic} and I still pick up something new.",
    "Our book club is reading this in {month}; I'll bring your notes on {topic}, thank you.",
    "Has anyone tried this with a {thing}? Mine is from 2015 and I'm not sure it supports it.",
]
_FILL = {
    "thing": ["printer", "router", "laptop", "scanner", "phone", "smart TV", "camera", "tablet"],
    "dish": ["lentil soup", "banana bread", "risotto", "apple pie", "curry", "pancake"],
    "topic": [
        "composting",
        "remote work",
        "sourdough",
        "budget travel",
        "home networking",
        "bird watching",
        "kids and screen time",
        "learning Spanish",
    ],
    "plant": ["tomatoes", "basil", "roses", "peppers", "mint", "lavender"],
    "place": ["Lisbon", "the lake district", "Kyoto", "the old town", "Vienna", "the coast"],
    "month": ["May", "October", "March", "August", "December"],
    "service": ["internet", "phone", "electricity", "cable"],
    "day": ["Friday", "tomorrow", "the weekend", "Monday"],
}


def ham_comment(rng: random.Random) -> str:
    """An ordinary reader comment, some on the same topics (printers, phones) as the campaign."""
    template = rng.choice(_HAM)
    return template.format(**{k: rng.choice(v) for k, v in _FILL.items()})

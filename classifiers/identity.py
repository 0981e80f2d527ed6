"""Which identity groups a comment names, for measuring an abuse model's bias against them.

Abusive comments name groups far more often than others (Jigsaw dev: 20% of the comments naming one are toxic,
against 10% of all), so a model can learn a group's name itself as abuse, and "I live with two Muslims" gets held
for review (Dixon et al., AIES 2018). ``bouncer evaluate --kind abuse`` reports, per group, the unintended-bias
metrics of Borkan et al. (WWW 2019): ROC-AUC within the comments naming the group, BPSN (the group's clean comments
against other abusive ones: low when naming the group alone raises the score) and BNSP (the group's abusive comments
against other clean ones: low when abuse aimed at the group is missed).
"""

from __future__ import annotations

import re

# The groups and the words that name them (lower case, as normalised comments read); the term list of Dixon et al.
# and the groups HateCheck tests, in their singular and plural forms.
IDENTITY_GROUPS: dict[str, tuple[str, ...]] = {
    "gender": ("woman", "women", "female", "females", "girl", "girls", "feminist", "feminists"),
    "gender identity": ("trans", "transgender", "transgenders", "transsexual", "transsexuals", "nonbinary"),
    "sexual orientation": (
        "gay", "gays", "lesbian", "lesbians", "bisexual", "bisexuals", "homosexual", "homosexuals", "queer",
        "lgbt", "lgbtq",
    ),
    "religion": (
        "muslim", "muslims", "islam", "islamic", "jew", "jews", "jewish", "christian", "christians", "catholic",
        "catholics", "hindu", "hindus", "sikh", "sikhs", "buddhist", "buddhists", "atheist", "atheists",
    ),
    "race or ethnicity": (
        "black", "blacks", "african", "africans", "asian", "asians", "hispanic", "hispanics", "latino", "latinos",
        "latina", "mexican", "mexicans", "chinese", "indian", "indians", "arab", "arabs", "white", "whites",
    ),
    "migration": ("immigrant", "immigrants", "refugee", "refugees", "migrant", "migrants", "foreigner", "foreigners"),
    "disability": ("disabled", "deaf", "blind", "autistic", "disability", "disabilities"),
}  # fmt: skip
_GROUP_OF = {word: group for group, words in IDENTITY_GROUPS.items() for word in words}
_WORD = re.compile(r"[a-z]+")


def identity_groups(normalised_text: str) -> frozenset[str]:
    """The groups a (normalised, lower-case) comment names."""
    return frozenset(_GROUP_OF[w] for w in _WORD.findall(normalised_text) if w in _GROUP_OF)

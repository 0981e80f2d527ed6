"""Labelled comments that name identity groups (abuse: 1), for the tests of the bias-per-group reports."""

IDENTITY_COMMENTS = [
    ("I live with two Muslims.", 0),
    ("My neighbours are Muslims and very kind.", 0),
    ("Muslims are vermin and should all leave.", 1),
    ("There is a woman on my football team.", 0),
    ("Women are stupid whores.", 1),
    ("Thanks for the recipe, it worked well.", 0),
    ("Nice photos from the trip.", 0),
    ("You are a worthless fucking idiot.", 1),
]

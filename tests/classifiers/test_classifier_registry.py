"""Registry: round trip, trusted types, promote / rollback, hot swap, seeding from the starter models."""

from __future__ import annotations

import fractions
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from click.testing import CliRunner

from classifiers import CommentInput, ModelRegistry, NothingToRollBack
from classifiers.cli import cli
from classifiers.features import NUMERIC_FEATURES
from classifiers.persistence import (
    TRUSTED_TYPES,
    ArtifactError,
    UntrustedArtifactError,
    load_pipeline,
    save_pipeline,
)
from classifiers.registry import STARTER_DIR

COMMENTS = [
    CommentInput(text="subscribe to my channel http://x.xyz", author_name="Cheap Deals 4 U"),
    CommentInput(text="Nice video, brings back memories"),
    CommentInput(text=""),
]


def test_round_trip_gives_identical_probabilities(spam_model, tmp_path: Path) -> None:
    pipeline, manifest = spam_model
    registry = ModelRegistry(tmp_path, seed_starter=False)
    version = registry.register("spam", pipeline, manifest)
    assert version.startswith("spam-") and len(version.split("-")) == 3
    loaded = ModelRegistry(tmp_path, seed_starter=False).load("spam", version)
    expected = pipeline.predict_proba(COMMENTS)[:, 1]
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(COMMENTS)[:, 1], expected)
    # LoadedModel scores through FastScorer: the same arithmetic in another order (float rounding only)
    np.testing.assert_allclose(loaded.predict_proba(COMMENTS), expected, rtol=0, atol=1e-6)
    stored = json.loads((tmp_path / "spam" / version / "manifest.json").read_text())
    assert stored["version"] == version and stored["thresholds"] == manifest["thresholds"]


def test_untrusted_types_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.skops"
    sio.dump({"x": fractions.Fraction(1, 3)}, path)  # a type nobody trusted
    with pytest.raises(UntrustedArtifactError, match="untrusted"):
        load_pipeline(path)
    sio.dump([1, 2], path)
    with pytest.raises(UntrustedArtifactError, match="Pipeline"):
        load_pipeline(path)


def test_saved_artifact_uses_only_trusted_types(spam_model, tmp_path: Path) -> None:
    save_pipeline(spam_model[0], tmp_path / "m.skops")
    assert set(sio.get_untrusted_types(file=tmp_path / "m.skops")) <= set(TRUSTED_TYPES)


def test_promote_rollback_and_hot_swap(spam_model, tmp_path: Path) -> None:
    pipeline, manifest = spam_model
    serving = ModelRegistry(tmp_path)  # seeds the starter model
    starter = serving.active("spam")
    assert [i.status for i in serving.versions("spam")] == ["active"]

    admin = ModelRegistry(tmp_path)  # another process
    version = admin.register("spam", pipeline, {**manifest, "created_at": "2999-01-01T00:00:00Z"})
    assert serving.active("spam") is starter  # candidates do not serve
    infos = admin.versions("spam")
    assert [(i.version, i.status) for i in infos] == [(version, "candidate"), (starter.version, "active")]
    assert admin.rollback_target("spam") is None  # two versions, but the candidate was never active

    admin.promote("spam", version)
    deadline = time.time() + 2
    while serving.active("spam").version != version and time.time() < deadline:
        os.utime(tmp_path / "spam" / "active.json")  # coarse mtime clocks: the inode changes anyway
    assert serving.active("spam").version == version
    assert {i.version: i.status for i in admin.versions("spam")}[starter.version] == "retired"

    assert admin.rollback_target("spam") == starter.version
    assert admin.rollback("spam") == starter.version
    assert serving.active("spam").version == starter.version
    assert {i.version: i.status for i in admin.versions("spam")}[version] == "needs_review"
    assert admin.rollback_target("spam") is None
    with pytest.raises(NothingToRollBack):
        admin.rollback("spam")

    admin.set_status("spam", version, "retired", note="worse on youtube")
    assert {i.version: i.status for i in admin.versions("spam")}[version] == "retired"
    with pytest.raises(ValueError):
        admin.set_status("spam", starter.version, "retired")
    with pytest.raises(KeyError):
        admin.load("spam", "../../etc")


@pytest.mark.parametrize(
    ("active_note", "after"),
    [
        ("starter model", {"new": "active", "old": "retired"}),  # untouched seeded starter: replaced
        ("promoted", {"new": "candidate", "old": "active"}),  # an admin's choice stays; the new one is offered
    ],
)
def test_an_upgrade_takes_in_the_newer_shipped_starter(
    tmp_path: Path, active_note: str, after: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """A registry as an older Bouncer left it (its active model a copy of the starter under an older name)."""
    shipped = sorted((STARTER_DIR / "spam").iterdir())[-1]
    old = "spam-20200101T000000Z-0ld0ld00"
    shutil.copytree(shipped, tmp_path / "spam" / old)
    manifest = json.loads((tmp_path / "spam" / old / "manifest.json").read_text(encoding="utf-8"))
    del manifest["features_version"]  # trained before feature versions were recorded
    (tmp_path / "spam" / old / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    state = {"active": old, "history": [], "statuses": {old: {"status": "active", "note": active_note, "at": "x"}}}
    (tmp_path / "spam" / "active.json").write_text(json.dumps(state), encoding="utf-8")

    registry = ModelRegistry(tmp_path)
    names = {"new": shipped.name, "old": old}
    with caplog.at_level(logging.WARNING, logger="classifiers.registry"):
        assert registry.active("spam").version == names[{v: k for k, v in after.items()}["active"]]
    stale_active = after["old"] == "active"
    assert ("trained under features version 1" in caplog.text) == stale_active, caplog.text
    assert {i.version: i.status for i in registry.versions("spam")} == {names[k]: v for k, v in after.items()}
    assert len(ModelRegistry(tmp_path).versions("spam")) == 2  # taken in once, not again
    assert {i.version: i.needs_retraining for i in registry.versions("spam")} == {old: True, shipped.name: False}
    if after["new"] == "active":
        assert registry.rollback("spam") == old  # the admin can still go back


def test_active_is_thread_safe(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    results: list[str] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                model = registry.active("abuse")
                model.score([CommentInput(text="hello there")])
                results.append(model.version)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1 and len(results) == 80


def test_starter_models_are_shipped_small_and_safe() -> None:
    for kind in ("spam", "abuse"):
        versions = [p for p in (STARTER_DIR / kind).iterdir() if p.is_dir()]
        assert len(versions) == 1, versions
        artifact = versions[0] / "model.skops"
        assert artifact.stat().st_size <= 10 * 1024 * 1024
        assert set(sio.get_untrusted_types(file=artifact)) <= set(TRUSTED_TYPES)
        manifest = json.loads((versions[0] / "manifest.json").read_text())
        assert all(f["train_allowed"] for f in manifest["data"])
        assert {f["source"] for f in manifest["data"]} <= {
            "youtube", "sms", "spamassassin", "jigsaw", "jigsaw-categories", "davidson", "convabuse"
        }  # fmt: skip
    assert (STARTER_DIR / "MODEL_CARD.md").is_file()


def test_a_commenters_e_mail_and_website_do_not_make_spam(tmp_path: Path) -> None:
    """No shipped training source has a commenter's e-mail or website (SpamAssassin's are blanked): the starter
    spam model must not have learnt "Gmail address" or "gives a website" from e-mail senders."""
    model = ModelRegistry(tmp_path).active("spam")
    text = "Thanks for the great article, the second example helped me a lot."
    variants = [
        CommentInput(text=text),
        CommentInput(text=text, author_email="jane.doe@gmail.com"),
        CommentInput(text=text, author_email="jane@university.edu"),
        CommentInput(text=text, author_url="https://janedoe.blog"),
    ]
    p = model.predict_proba(variants)
    assert p[0] < 0.05
    # Not exactly equal: a hashed metadata column can be shared with a learnt token (2**14 columns). Learnt from
    # e-mail, the Gmail address alone moved this comment from 0.004 to 0.14.
    assert np.abs(p - p[0]).max() < 0.01, p


def test_a_commenters_first_name_does_not_move_the_spam_score(tmp_path: Path) -> None:
    """Name words learnt from e-mail senders and YouTube channels were identities ("Tom" -2.3 logits, "Matt"
    +2.6): the starter spam model reads how a name looks, not who it is, so first names score alike."""
    model = ModelRegistry(tmp_path).active("spam")
    text = "Wow, superb blog layout! How long have you been blogging for? You make blogging look easy."
    names = ["Tom", "Paul", "John", "Kate", "Matt", "Lisa", "Anna", "Priya", "Mohammed"]
    p = model.predict_proba([CommentInput(text=text, author_name=n) for n in names])
    assert np.ptp(p) == 0.0, dict(zip(names, p.round(4), strict=True))
    brand = model.predict_proba([CommentInput(text=text, author_name="Best Cheap Flights 24x7")])
    assert brand[0] > p[0]  # a name of many ordinary words with digits reads like an ad
    written = model.predict_proba([CommentInput(text=text, author_name=n) for n in ("Jane Doe", "jane doe")])
    assert written[0] == written[1]  # capitals in a person's name are no spam sign


def test_a_link_written_without_its_scheme_still_reads_as_a_link(tmp_path: Path) -> None:
    """The preparer marks every link, so a bare domain shares the n-grams of a full URL; the reasons quote the
    comment's own words, never the mark."""
    model = ModelRegistry(tmp_path).active("spam")
    comments = [
        CommentInput(text="visit my page idquw.tk"),
        CommentInput(text="visit my page"),
        CommentInput(text="Cheap movies every day at gonintendo(dot)com/?id=5"),
        CommentInput(text="Click here http://bit.ly/3xYz and start today"),
        CommentInput(text="Oh, and look at this video (https://www.youtube.com/watch?v=jG7vhMMXagQ)."),  # "(link:"
    ]
    scores = model.score(comments)
    assert scores[0].probability > scores[1].probability + 0.05  # the link itself is evidence
    for comment, score in zip(comments, scores, strict=True):
        quoted = [r for r in score.reasons if r.startswith(("phrase '", "word '"))]
        assert all("link" not in r for r in quoted), (comment.text, score.reasons)
    assert any("youtube.com/watch" in r for r in scores[4].reasons), scores[4].reasons  # the address is quoted
    assert any("a .com domain" in r for r in scores[2].reasons), scores[2].reasons  # the dot spelled out


def test_reasons_quote_a_link_as_written(tmp_path: Path) -> None:
    """Runs of a letter are folded ("sooooo" -> "soo"), but not the "www" of a link: the reason names the address
    the comment gave, not "ww.easy-money-now.biz"."""
    model = ModelRegistry(tmp_path).active("spam")
    (score,) = model.score([CommentInput(text="Earn $5000 a week from home! Check out www.easy-money-now.biz")])
    assert any("www.easy-money-now.biz" in r for r in score.reasons), score.reasons


def test_numeric_reasons_are_relative_to_a_typical_comment(tmp_path: Path) -> None:
    """Length has a positive spam weight, yet a short comment must not be told it is a "long text"."""
    model = ModelRegistry(tmp_path).active("spam")
    short = CommentInput(text="Check out my channel and subscribe please!!")
    (score,) = model.score([short])
    assert score.probability > 0.9
    assert "long text" not in score.reasons
    assert "mostly capital letters" not in score.reasons
    (shouting,) = model.score([CommentInput(text="BUY NOW!!! BEST PRICES ON WATCHES, CLICK THE LINK IN MY PROFILE")])
    assert "mostly capital letters" in shouting.reasons


def test_numeric_reasons_say_which_way_the_comment_differs(tmp_path: Path) -> None:
    """A signal with a negative weight pushes towards spam when a comment has less of it than usual: the reason
    says "few symbols" then, never "many symbols" for a comment with one comma."""
    model = ModelRegistry(tmp_path).active("spam")
    coef = model.pipeline.named_steps["clf"].coef_
    weights = dict(zip(NUMERIC_FEATURES, coef[-len(NUMERIC_FEATURES) :], strict=True))
    assert weights["symbol_ratio"] < 0  # the premise: fewer symbols than usual reads as spam
    (score,) = model.score([CommentInput(text="Subscribe to my channel please, thanks")])
    assert "few symbols" in score.reasons and "many symbols" not in score.reasons, score.reasons
    (symbols,) = model.score([CommentInput(text="$$$ >>> FREE $$$ <<< ### !!! *** $$$ +++ win ===")])
    assert "few symbols" not in symbols.reasons, symbols.reasons
    abuse = ModelRegistry(tmp_path).active("abuse")
    (threat,) = abuse.score([CommentInput(text="I will kill you.")])
    assert not any("capital" in r for r in threat.reasons), threat.reasons


def test_digits_and_phone_numbers_are_no_abuse_sign(tmp_path: Path) -> None:
    """The abuse model ignores the digit and phone signals (spam signs): a price, a date or a phone number is
    never a reason for an abuse score, and the spam model still counts them."""
    registry = ModelRegistry(tmp_path)
    abuse, spam = registry.active("abuse"), registry.active("spam")
    comment = CommentInput(text="I paid $25 on 12/03/2024, call me at +1 (800) 555-0199 if you want the receipt.")
    (a,) = abuse.score([comment])
    assert not {"many digits", "phone number"} & set(a.reasons), a.reasons
    (s,) = spam.score([comment])
    assert {"many digits", "phone number"} & set(s.reasons), s.reasons


def test_the_shipped_abuse_model_reads_misspelt_insults(tmp_path: Path) -> None:
    """Trained with misspelt copies of its rows: an insult with typos stays abuse, a thank-you with typos does not."""
    abuse = ModelRegistry(tmp_path).active("abuse")
    insults = ["You are a stupd idoit.", "shut up you patehtic losre"]
    thanks = "Thnaks for the graet article, the secnod exmaple helpd me a lot."
    p = abuse.predict_proba([CommentInput(text=t) for t in [*insults, thanks]])
    assert (p[:2] >= 0.5).all(), p  # more likely abuse than not, typos and all
    assert abuse.thresholds.decide(float(p[2])) == "approve", p


def test_the_shipped_models_read_fancy_text(tmp_path: Path) -> None:
    """The letter styles of "fancy text" generators, and marks put on every letter, dodged both models: "ʏᴏᴜ ᴀʀᴇ ᴀɴ
    ɪᴅɪᴏᴛ" was approved (0.027) where "you are an idiot" is rejected. They now score as the plain text."""
    registry = ModelRegistry(tmp_path)
    variants = {
        "abuse": [
            "you are an idiot",
            "ʏᴏᴜ ᴀʀᴇ ᴀɴ ɪᴅɪᴏᴛ",  # small capitals
            "🅨🅞🅤 🅐🅡🅔 🅐🅝 🅘🅓🅘🅞🅣",  # negative circled
            "⒴⒪⒰ ⒜⒭⒠ ⒜⒩ ⒤⒟⒤⒪⒯",  # parenthesized
            "".join(c + "\u0336" for c in "you are an idiot"),  # strike-through
            "".join(c + "\u0300\u0316\u0317" for c in "you are an idiot"),  # Zalgo
            "ýóú áŕé áń ídíót",  # an accent on every letter
        ],
        "spam": ["buy cheap viagra", "ʙᴜʏ ᴄʜᴇᴀᴘ ᴠɪᴀɢʀᴀ", "🅱🆄🆈 🅲🅷🅴🅰🅿 🆅🅸🅰🅶🆁🅰", "búý ćhéáṕ v́íáǵŕá"],
    }
    for kind, texts in variants.items():
        p = registry.active(kind).predict_proba([CommentInput(text=t) for t in texts])
        assert np.allclose(p, p[0]), dict(zip(texts, p.round(3), strict=True))


def test_the_shipped_abuse_model_leaves_casual_comments_alone(tmp_path: Path) -> None:
    """Trained with YouTube comments as negatives: short, casual remarks are approved, not held for abuse (the
    starter before held three of these), and a plain insult is still rejected."""
    abuse = ModelRegistry(tmp_path).active("abuse")
    casual = [
        "Love this song, been listening to it all week!",
        "My kids love this one.",
        "Can't believe how many views this has now.",
        "The drummer is amazing in the second half.",
        "This reminds me of summer.",
        "Great video, thanks for sharing.",
    ]
    p = abuse.predict_proba([CommentInput(text=t) for t in [*casual, "You are an idiot and should stop writing."]])
    assert [abuse.thresholds.decide(float(v)) for v in p[:-1]] == ["approve"] * len(casual), p
    assert abuse.thresholds.decide(float(p[-1])) == "reject", p


def _copy_version(registry_root: Path, version: str, name: str) -> Path:
    dst = registry_root / "spam" / name
    shutil.copytree(registry_root / "spam" / version, dst)
    return dst


def test_a_corrupt_or_replaced_artifact_is_refused_with_a_message(spam_model, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, seed_starter=False)
    good = registry.register("spam", spam_model[0], spam_model[1], status="active")
    artifact = (tmp_path / "spam" / good / "model.skops").read_bytes()
    cut = _copy_version(tmp_path, good, "spam-cut")
    (cut / "model.skops").write_bytes(artifact[: len(artifact) // 2])  # a copy that stopped half way
    replaced = _copy_version(tmp_path, good, "spam-replaced")
    save_pipeline(spam_model[0], replaced / "model.skops")  # loads fine, but it is not the file the manifest names
    (replaced / "model.skops").write_bytes((replaced / "model.skops").read_bytes() + b"\0")
    no_digest = _copy_version(tmp_path, good, "spam-no-digest")  # a manifest from before digests were recorded
    manifest = json.loads((no_digest / "manifest.json").read_text())
    del manifest["artifact_sha256"]
    (no_digest / "manifest.json").write_text(json.dumps(manifest))
    (no_digest / "model.skops").write_bytes(b"PK\x03\x04 not really a zip")
    garbled = _copy_version(tmp_path, good, "spam-garbled")
    (garbled / "manifest.json").write_text("{not json")

    for name, message in [
        ("spam-cut", "does not match the artifact_sha256 of its manifest"),
        ("spam-replaced", "does not match the artifact_sha256 of its manifest"),
        ("spam-no-digest", "not a readable skops artifact"),
        ("spam-garbled", "unreadable manifest"),
    ]:
        with pytest.raises(ArtifactError, match=message):
            ModelRegistry(tmp_path, seed_starter=False).promote("spam", name)
        result = CliRunner().invoke(cli, ["models", "promote", "--kind", "spam", name], obj={"models_dir": tmp_path})
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert message in result.output and str(tmp_path / "spam" / name) in result.output
    assert ModelRegistry(tmp_path, seed_starter=False).active("spam").version == good
    # the list shows every readable version and says which one it skipped
    result = CliRunner().invoke(cli, ["models", "list", "--kind", "spam", "--json"], obj={"models_dir": tmp_path})
    assert result.exit_code == 0, result.output
    listed = {v["version"] for v in json.loads(result.stdout)}
    assert {good, "spam-cut", "spam-replaced", "spam-no-digest"} <= listed and "spam-garbled" not in listed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("thresholds", {"approve_below": "x", "reject_at": 0.9}),
        ("thresholds", {"approve_below": [0.2], "reject_at": 0.9}),
        ("thresholds", {"approve_below": 0.2, "reject_at": float("nan")}),
        ("thresholds", "0.2-0.9"),
        ("thresholds", None),
        ("features_version", "eight"),
    ],
)
def test_a_manifest_with_unusable_numbers_is_an_unreadable_manifest(
    spam_model, tmp_path: Path, field: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Listing read the thresholds without a check: one bad version broke the whole list (a message for a string,
    a traceback for a list or a non-object). It is now an unreadable manifest like any other: left out of the
    list with a warning that names it, and refused by promote and rollback."""
    registry = ModelRegistry(tmp_path, seed_starter=False)
    first = registry.register("spam", spam_model[0], spam_model[1], status="active")
    bad = _copy_version(tmp_path, first, "spam-bad")
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text(json.dumps({**manifest, field: value}))
    registry.promote("spam", _copy_version(tmp_path, first, "spam-good").name)
    state = json.loads((tmp_path / "spam" / "active.json").read_text())
    state["history"].append("spam-bad")  # as if it had served before its manifest was damaged
    (tmp_path / "spam" / "active.json").write_text(json.dumps(state))

    runner, obj = CliRunner(), {"models_dir": tmp_path}
    for args in (["models", "list", "--kind", "spam"], ["models", "list", "--kind", "spam", "--json"]):
        with caplog.at_level(logging.WARNING, logger="classifiers.registry"):
            result = runner.invoke(cli, args, obj=obj)
        assert result.exit_code == 0, result.output
        assert first in result.stdout and "spam-good" in result.stdout and "spam-bad" not in result.stdout
        assert f"spam model spam-bad is not listed: {bad / 'manifest.json'}: unreadable manifest" in caplog.text
        assert field in caplog.text, caplog.text
        caplog.clear()
    for args in (["models", "promote", "--kind", "spam", "spam-bad"], ["models", "rollback", "--kind", "spam"]):
        result = runner.invoke(cli, args, obj=obj)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert f"{bad / 'manifest.json'}: unreadable manifest" in result.output and field in result.output
    assert ModelRegistry(tmp_path, seed_starter=False).active("spam").version == "spam-good"


def test_rollback_never_activates_a_version_that_does_not_load(spam_model, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, seed_starter=False)
    first = registry.register("spam", spam_model[0], spam_model[1], status="active")
    second = _copy_version(tmp_path, first, "spam-second").name
    registry.promote("spam", second)
    (tmp_path / "spam" / first / "model.skops").write_bytes(b"")  # the disk ate the old one
    with pytest.raises(ArtifactError, match="does not match"):
        registry.rollback("spam")
    state = json.loads((tmp_path / "spam" / "active.json").read_text())
    assert state["active"] == second and state["history"] == [first]  # nothing changed: fix it, then roll back
    assert ModelRegistry(tmp_path, seed_starter=False).active("spam").version == second


def test_versions_and_pointers_cannot_lead_outside_the_registry(spam_model, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    registry = ModelRegistry(root, seed_starter=False)
    good = registry.register("spam", spam_model[0], spam_model[1], status="active")
    outside = tmp_path / "elsewhere" / "spam-outside"
    shutil.copytree(root / "spam" / good, outside)
    (root / "spam" / "spam-outside").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactError, match="leads outside the registry"):
        registry.promote("spam", "spam-outside")
    for name in ("../../elsewhere/spam-outside", "/etc", ".hidden", ""):
        with pytest.raises(KeyError):
            registry.load("spam", name)
    pointer = root / "spam" / "active.json"
    state = json.loads(pointer.read_text())
    pointer.write_text(json.dumps({**state, "active": "../../elsewhere/spam-outside"}))
    with pytest.raises(KeyError):
        ModelRegistry(root, seed_starter=False).active("spam")
    pointer.write_text('{"active": ')  # cut short
    with pytest.raises(ArtifactError, match="unreadable registry pointer"):
        ModelRegistry(root, seed_starter=False).versions("spam")
    result = CliRunner().invoke(cli, ["models", "list", "--kind", "spam"], obj={"models_dir": root})
    assert result.exit_code == 1 and "unreadable registry pointer" in result.output, result.output


def test_registry_files_are_readable_by_the_processes_of_other_users(spam_model, tmp_path: Path) -> None:
    """The web and worker processes may run as other users than the admin who trains (a shared models volume)."""
    registry = ModelRegistry(tmp_path)
    registry.active("spam")  # seeds the starter
    version = registry.register("spam", *spam_model)
    registry.promote("spam", version)
    kind_dir = tmp_path / "spam"
    for path in (kind_dir / "active.json", kind_dir / version, kind_dir / version / "manifest.json"):
        assert path.stat().st_mode & 0o044 == 0o044, (path, oct(path.stat().st_mode))


def test_serving_from_a_seeded_registry_needs_no_write_access(tmp_path: Path) -> None:
    """A web or worker process only reads: it must not open the registry's lock file for writing (on a read-only
    models volume, or as a user who did not create it, that open failed with PermissionError on the first decision).
    """
    ModelRegistry(tmp_path).active("spam")  # the admin's process seeds the starter
    lock = tmp_path / "spam" / ".lock"
    lock.unlink()
    before = sorted(p.name for p in (tmp_path / "spam").iterdir())
    serving = ModelRegistry(tmp_path)
    assert serving.active("spam").version in before
    assert [i.status for i in serving.versions("spam")] == ["active"]
    assert serving.load("spam", before[-1]).version == before[-1]
    assert not lock.exists() and sorted(p.name for p in (tmp_path / "spam").iterdir()) == before

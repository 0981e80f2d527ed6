"""Loaders (CSV, JSON Lines, a WXR file written here) and the click commands."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from classifiers import load_any, load_csv, load_jsonl, load_wxr
from classifiers.cli import cli
from classifiers.data import DataError, parse_time
from tests.identity_comments import IDENTITY_COMMENTS

WXR = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:excerpt="http://wordpress.org/export/1.2/excerpt/" xmlns:wp="http://wordpress.org/export/1.2/">
<channel><title>My blog</title>
<item><title>Sourdough at home</title><link>https://blog.example/sourdough</link>
  <excerpt:encoded><![CDATA[How to bake bread]]></excerpt:encoded><wp:post_id>7</wp:post_id>
  <wp:post_date>2024-03-01 13:00:00</wp:post_date><wp:post_date_gmt>2024-03-01 12:00:00</wp:post_date_gmt>
  <wp:comment><wp:comment_id>1</wp:comment_id><wp:comment_author><![CDATA[Anna]]></wp:comment_author>
    <wp:comment_author_email>anna@example.org</wp:comment_author_email><wp:comment_author_url></wp:comment_author_url>
    <wp:comment_author_IP>192.0.2.1</wp:comment_author_IP><wp:comment_approved>1</wp:comment_approved>
    <wp:comment_type>comment</wp:comment_type>
    <wp:comment_date>2024-03-01 15:00:00</wp:comment_date>
    <wp:comment_date_gmt>2024-03-01 14:00:00</wp:comment_date_gmt>
    <wp:comment_content><![CDATA[Lovely crumb, thanks!]]></wp:comment_content></wp:comment>
  <wp:comment><wp:comment_id>2</wp:comment_id><wp:comment_author><![CDATA[Cheap Flights]]></wp:comment_author>
    <wp:comment_author_email>x@mailinator.com</wp:comment_author_email>
    <wp:comment_author_url>http://cheap.xyz</wp:comment_author_url><wp:comment_approved>spam</wp:comment_approved>
    <wp:comment_date>2024-03-01 13:00:20</wp:comment_date><wp:comment_date_gmt>0000-00-00 00:00:00</wp:comment_date_gmt>
    <wp:comment_content><![CDATA[Best deals http://cheap.xyz]]></wp:comment_content></wp:comment>
  <wp:comment><wp:comment_id>3</wp:comment_id><wp:comment_approved>0</wp:comment_approved>
    <wp:comment_content>pending</wp:comment_content></wp:comment>
  <wp:comment><wp:comment_id>4</wp:comment_id><wp:comment_approved>trash</wp:comment_approved>
    <wp:comment_content>trashed</wp:comment_content></wp:comment>
</item></channel></rss>
"""


def test_load_wxr(tmp_path: Path) -> None:
    path = tmp_path / "export.xml"
    path.write_text(WXR, encoding="utf-8")
    data = load_wxr(path)
    assert [c.text for c in data.comments] == ["Lovely crumb, thanks!", "Best deals http://cheap.xyz"]
    assert data.labels.tolist() == [0, 1]
    spam = data.comments[1]
    assert (spam.author_name, spam.author_url, spam.post_title) == (
        "Cheap Flights",
        "http://cheap.xyz",
        "Sourdough at home",
    )
    assert data.comments[0].post_excerpt == "How to bake bread" and data.groups == ["7", "7"]
    # seconds since the post: GMT dates when both have them, else the site-local ones
    assert [c.seconds_since_post for c in data.comments] == [7200.0, 20.0]
    assert set(data.splits) <= {"train", "dev", "test"} and len(data.files[0]["sha256"]) == 64
    # when each comment was written: GMT, else the site-local date (a history import orders labels by it)
    assert data.times == [
        dt.datetime(2024, 3, 1, 14, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 3, 1, 13, 0, 20, tzinfo=dt.UTC),
    ]
    assert data.subset([False, True]).times == data.times[1:]


def test_load_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    rows = [
        {"content": "buy now", "label": "spam", "author": {"name": "Deals", "url": "http://d.xyz"}},
        {"text": "nice post", "label": 0, "split": "dev", "post": {"title": "Hello"}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    data = load_jsonl(path)
    assert data.labels.tolist() == [1, 0]
    assert data.comments[0].author_url == "http://d.xyz" and data.comments[1].post_title == "Hello"
    assert data.splits[1] == "dev"
    assert data.times == [None, None]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2013-11-07T06:20:48", dt.datetime(2013, 11, 7, 6, 20, 48, tzinfo=dt.UTC)),  # no zone: UTC
        ("2025-01-02T10:00:00Z", dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC)),
        ("2025-01-02 12:00:00+02:00", dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC)),
        ("Thu, 22 Aug 2002 18:26:25 +0700", dt.datetime(2002, 8, 22, 11, 26, 25, tzinfo=dt.UTC)),  # SpamAssassin
        ("9999-12-31T23:00:00-05:00", None),  # past year 9999 in UTC
        ("last tuesday", None),
        ("", None),
        (None, None),
        (20250102, None),
    ],
)
def test_parse_time(raw: object, expected: dt.datetime | None) -> None:
    assert parse_time(raw) == expected


def test_loaders_keep_the_times_their_files_give(tmp_path: Path, data_dir: Path) -> None:
    path = tmp_path / "history.jsonl"
    rows = [{"text": "a", "label": 0, "created_at": "2025-01-02T10:00:00Z"}, {"text": "b", "label": 1, "date": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert load_jsonl(path).times == [dt.datetime(2025, 1, 2, 10, 0, tzinfo=dt.UTC), None]
    youtube = load_csv(data_dir / "spam" / "youtube.csv")
    assert youtube.times[0] == dt.datetime(2013, 11, 7, 6, 20, 48, tzinfo=dt.UTC)
    both = type(youtube).concat([youtube, load_csv(data_dir / "spam" / "sms.csv")])
    assert len(both.times) == len(both) and both.times[-1] is None  # SMS has no dates


def test_load_csv_split_and_categories(data_dir: Path) -> None:
    full = load_csv(data_dir / "abuse" / "jigsaw-categories.csv")
    test = load_csv(data_dir / "abuse" / "jigsaw-categories.csv", split="test")
    assert 0 < len(test) < len(full) and set(test.splits) == {"test"}
    assert {"insult", "threat", "obscene", "identity_hate", "severe"} <= set(full.categories)
    assert set(load_csv(data_dir / "abuse" / "davidson.csv", "dev").categories) == {"hate", "offensive"}
    assert load_csv(data_dir / "abuse" / "olid.csv", "dev").categories == {}


def test_cli_train_evaluate_models(tmp_path: Path, data_dir: Path, slicer) -> None:
    sizes = {"train": 250, "dev": 80, "test": 60}
    files = [
        slicer.write(data_dir / "spam" / "youtube.csv", tmp_path / "youtube.csv", sizes),
        slicer.write(data_dir / "spam" / "sms.csv", tmp_path / "sms.csv", sizes),
    ]
    models_dir = tmp_path / "models"
    runner = CliRunner()
    obj = {"models_dir": str(models_dir)}
    data_args = [a for f in files for a in ("--data", str(f))]

    result = runner.invoke(cli, ["train", "--kind", "spam", *data_args], obj=obj)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    version = summary["version"]
    assert summary["status"] == "candidate" and "youtube" in summary["test"]

    result = runner.invoke(cli, ["evaluate", "--kind", "spam", *data_args, "--model", version, "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"n", "positives", "roc_auc", "pr_auc", "f1", "brier", "operating_point"} <= set(report)
    assert report["n"] == 120 and report["roc_auc"] > 0.85
    assert set(report["operating_point"]) == {
        "approve_below",
        "reject_at",
        "ham_rejected",
        "positives_approved",
        "held",
    }
    assert "by_identity" not in report  # identity-group bias is an abuse measure

    # The same rows with typos: scored differently, reported with the rate, and the rate is validated.
    args = ["evaluate", "--kind", "spam", *data_args, "--model", version, "--misspell", "0.5", "--json"]
    result = runner.invoke(cli, args, obj=obj)
    assert result.exit_code == 0, result.output
    misspelt = json.loads(result.output)
    assert misspelt["misspelt_rate"] == 0.5 and misspelt["n"] == report["n"] and "misspelt_rate" not in report
    assert misspelt["brier"] != report["brier"]
    assert runner.invoke(cli, [*args[:-2], "1.5", "--json"], obj=obj).exit_code == 2

    result = runner.invoke(cli, ["models", "list", "--kind", "spam", "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    starter = next(i["version"] for i in listed if i["status"] == "active")
    assert {i["version"] for i in listed} == {version, starter}

    assert runner.invoke(cli, ["models", "promote", "--kind", "spam", version], obj=obj).exit_code == 0
    result = runner.invoke(cli, ["evaluate", "--kind", "spam", *data_args, "--split", "dev", "--json"], obj=obj)
    assert json.loads(result.output)["model"] == version
    result = runner.invoke(cli, ["models", "rollback", "--kind", "spam"], obj=obj)
    assert result.exit_code == 0 and starter in result.output
    bad = runner.invoke(cli, ["models", "promote", "--kind", "spam", "spam-nope"], obj=obj)
    assert bad.exit_code != 0 and "no spam model version" in bad.output


def test_cli_evaluate_abuse_reports_bias_per_identity_group(tmp_path: Path) -> None:
    data = tmp_path / "identity.csv"
    with open(data, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label", "split"])
        writer.writerows((i, text, label, "test") for i, (text, label) in enumerate(IDENTITY_COMMENTS))
    runner = CliRunner()
    obj = {"models_dir": str(tmp_path / "models")}  # seeded with the shipped starters
    args = ["evaluate", "--kind", "abuse", "--data", str(data), "--split", "test"]
    result = runner.invoke(cli, [*args, "--json"], obj=obj)
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)["by_identity"]
    assert set(groups) == {"religion", "gender", "(none)"}
    assert groups["religion"]["n"] == 3 and groups["religion"]["positives"] == 1
    assert groups["religion"]["roc_auc"] == 1.0  # the shipped model puts "vermin" above the neighbours
    assert {"bpsn_roc_auc", "bnsp_roc_auc", "negatives_mean_probability"} <= set(groups["gender"])
    assert groups["(none)"]["n"] == 3
    text = runner.invoke(cli, args, obj=obj)
    assert text.exit_code == 0 and "naming religion: n=3 positives=1" in text.output
    assert "naming no group: n=3 positives=1" in text.output


@pytest.mark.parametrize("split", ["testing", "Test", "validation"])
def test_cli_evaluate_refuses_an_unknown_split(tmp_path: Path, split: str) -> None:
    """A misspelt split was read as a split with no rows: "no rows in split 'testing'", as if the file were empty."""
    data = tmp_path / "rows.csv"
    data.write_text("text,label,split\nhello,0,test\nbuy now,1,test\n", encoding="utf-8")
    args = ["evaluate", "--kind", "spam", "--data", str(data), "--split", split]
    result = CliRunner().invoke(cli, args, obj={"models_dir": str(tmp_path / "models")})
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '--split': '{split}' is not one of 'train', 'dev', 'test', 'all'" in result.output


def test_cli_evaluate_says_what_the_file_holds_when_a_split_is_empty(tmp_path: Path) -> None:
    """A file without a split column is split by a hash of each text, so a small one may have no test rows: the
    error said only "no rows in split 'test'", as if the file were empty."""
    data = tmp_path / "rows.csv"
    data.write_text("text,label\nBuy cheap pills now,1\nGreat article,0\nVisit my casino,1\n", encoding="utf-8")
    args = ["evaluate", "--kind", "spam", "--data", str(data), "--json"]
    obj = {"models_dir": str(tmp_path / "models")}
    result = CliRunner().invoke(cli, args, obj=obj)
    assert result.exit_code == 1, result.output
    assert "no rows in split 'test' (found 2 train, 1 dev; rows without a split" in result.output
    assert "--split all evaluates every row" in result.output
    result = CliRunner().invoke(cli, [*args, "--split", "all"], obj=obj)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n"] == 3


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_help_says_data_may_be_repeated(command: str) -> None:
    """Both take several files (`--data FILE...`); evaluate's help said nothing about --data."""
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Labelled file (.csv shared schema, .jsonl, WordPress .xml); repeat for several." in result.output


def test_cli_registry_root_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BOUNCER_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BOUNCER_MODELS_DIR", raising=False)  # set for the session by an earlier test's fixture
    result = CliRunner().invoke(cli, ["models", "list", "--kind", "abuse"])
    assert result.exit_code == 0, result.output
    assert "active" in result.output and (tmp_path / "models" / "abuse" / "active.json").is_file()


def test_cli_registry_root_from_models_dir_variable(tmp_path: Path, monkeypatch) -> None:
    """`python -m classifiers.cli` is the bouncer group standalone: it used the data dir's registry even when
    BOUNCER_MODELS_DIR named another, so a promote there changed a registry no process reads."""
    monkeypatch.setenv("BOUNCER_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("BOUNCER_MODELS_DIR", str(tmp_path / "shared-models"))
    result = CliRunner().invoke(cli, ["models", "list", "--kind", "spam"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "shared-models" / "spam" / "active.json").is_file()
    assert not (tmp_path / "var").exists()


ENTITY_WXR = """<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY a "spam spam spam spam spam spam spam spam"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<rss xmlns:wp="http://wordpress.org/export/1.2/"><channel><item><title>t</title>
<wp:comment><wp:comment_content>&b;</wp:comment_content><wp:comment_approved>spam</wp:comment_approved></wp:comment>
</item></channel></rss>
"""

HOSTILE_FILES = [
    # (file name, bytes, what the message must say)
    ("cut.xml", b"<rss><channel><item><title>x</title>", r"cut\.xml:1: not well-formed XML: no element found"),
    ("entities.xml", ENTITY_WXR.encode(), r"entities\.xml: refusing a WXR file with a DOCTYPE"),
    (
        "external.xml",
        b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><rss/>',
        r"external\.xml: refusing a WXR file with a DOCTYPE",
    ),
    ("short.csv", b"text,label\nhello\n", r"short\.csv:2: label must be 0 or 1, found nothing"),
    ("words.csv", b"text,label\nhello,spam\n", r"words\.csv:2: label must be 0 or 1, found 'spam'"),
    ("nolabel.csv", b"id,text\n1,hello\n", r"nolabel\.csv: missing column\(s\) label; the header has: id, text"),
    ("empty.csv", b"", r"empty\.csv: empty file"),
    ("latin1.csv", b"text,label\n" + b"fine,0\n" * 3000 + b"caf\xe9,1\n", r"latin1\.csv:3002: not UTF-8 text"),
    ("split.csv", b"text,label,split\nhello,1,testing\n", r"split\.csv:2: split must be one of train, dev, test"),
    ("number.jsonl", b'{"text": 5, "label": 1}\n', r"number\.jsonl:1: text must be a string, found 5"),
    ("author.jsonl", b'{"text": "hi", "author": {"name": ["x"]}, "label": 0}\n', r"author_name must be a string"),
    ("nolabel.jsonl", b'{"text": "ok"}\n{"text": "x"}\n', r"nolabel\.jsonl:1: no label; expected label 0/1"),
    ("typo.jsonl", b'{"text": "ok", "label": "Spam"}\n', r'typo\.jsonl:1: label "Spam"; expected'),
    ("cut.jsonl", b'{"text": "ok", "label": 0}\n{"text": "x", "label": 1\n', r"cut\.jsonl:2: not valid JSON"),
]


@pytest.mark.parametrize(("name", "content", "message"), HOSTILE_FILES, ids=[h[0] for h in HOSTILE_FILES])
def test_hostile_data_files_fail_with_a_message_naming_file_and_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_any(path)


def test_data_file_with_a_byte_order_mark_and_excel_style_header(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\nhello,1\n")
    data = load_any(path)
    assert data.labels.tolist() == [1] and data.comments[0].text == "hello"


def test_cli_says_what_is_wrong_with_a_data_file_instead_of_a_traceback(tmp_path: Path) -> None:
    bad_xml = tmp_path / "export.xml"
    bad_xml.write_text("<rss><channel><item>", encoding="utf-8")
    short = tmp_path / "short.csv"
    short.write_text("text,label\nhello\n", encoding="utf-8")
    registry = str(tmp_path / "models")
    for path in (bad_xml, short):
        result = CliRunner().invoke(cli, ["train", "--kind", "spam", "--data", str(path), "--out", registry])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
        assert result.output.startswith(f"Error: cannot read data: {path}"), result.output


def test_cli_evaluate_text_says_a_ranking_metric_is_undefined_on_one_class(tmp_path: Path) -> None:
    """A site's history of approved comments only has no ROC-AUC: the text report printed 'ROC-AUC None'."""
    data = tmp_path / "ham.csv"
    data.write_text("text,label,split\nthanks for the post,0,test\nnice photos,0,test\n", encoding="utf-8")
    args = ["evaluate", "--kind", "spam", "--data", str(data), "--split", "test"]
    result = CliRunner().invoke(cli, args, obj={"models_dir": str(tmp_path / "models")})
    assert result.exit_code == 0, result.output
    assert "ROC-AUC n/a (one class only)  PR-AUC n/a (one class only)" in result.output
    assert "None" not in result.output

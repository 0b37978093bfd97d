"""Learning curves of the quick model on the synthetic dataset's planted tags, per head.

    python benchmarks/planted_learning.py --set model.backbone=small_cnn model.width_mult=1.0
    python benchmarks/planted_learning.py --tracks 17982 --steps 5000 --every 2500 \\
        --device cuda --workers 2 --predictions ref-0.npz \\
        --set model.backbone=small_cnn model.width_mult=1.0 optim.batch_size=32

Trains the quick preset (mixup, SpecAugment and the optimizer switch off) on a synthetic
dataset generated with the given ``Design.long_range_kind`` (``--kind``) and
``Design.decoy_share``, and every ``--every`` steps scores the test split: ROC-AUC and PR-AUC
over the planted local and long-range tags, for the combined prediction and each head, and
the ROC-AUC between long-range positives and their decoys (0.5 for a segment-average model, up
to the tags' real co-occurrence; docs/synthetic.md). This is what shows whether self-attention
has learnt the planted relation: its positives-vs-decoys score pulls away from the segment
head's. ``--predictions FILE`` keeps the last scoring's test predictions for
``benchmarks/planted_ablation.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from moodtheme.augment import EvalTransform
from moodtheme.config import Config, ConfigError, build_config, parse_overrides
from moodtheme.data.melspec import make_loader
from moodtheme.data.synth import (
    GENERATOR_VERSION,
    LONG_RANGE_KINDS,
    Design,
    Nuisance,
    Plan,
    Signature,
    SynthError,
    add_event,
    cache_root,
    cached_dataset,
    generate,
    load_planted,
    render_track,
)
from moodtheme.evaluate import per_tag_auc
from moodtheme.models import build_model, init_output_bias
from moodtheme.train import (
    load_tables,
    make_datasets,
    make_optimizer,
    probabilities,
    run_inference,
    seed_everything,
    train_step,
)

RECIPE = {
    "augment.mixup_alpha": 0.0,
    "augment.specaugment_p": 0.0,
    "optim.switch_epoch": None,
}


def dataset(tracks: int, design: Design, folder: Path | None) -> Path:
    """The synthetic dataset with this design, generated on first use."""
    if folder is None and design == Design():
        return cached_dataset(tracks)
    name = f"planted-v{GENERATOR_VERSION}-{tracks}-{design.long_range_kind}-{design.decoy_share:g}"
    root = folder or cache_root() / name
    if not (root / "planted.json").is_file():
        print(f"generating {tracks} tracks ({design}) in {root}", flush=True)
        generate(root, tracks=tracks, design=design)
    return root


def group_scores(
    labels: np.ndarray, probs: np.ndarray, columns: dict[str, list[int]]
) -> dict[str, tuple[float, float]]:
    roc, pr = per_tag_auc(labels.astype(bool), probs)
    return {g: (float(np.nanmean(roc[c])), float(np.nanmean(pr[c]))) for g, c in columns.items()}


def positives_vs_decoys(
    labels: np.ndarray, probs: np.ndarray, decoys: dict[int, np.ndarray]
) -> float:
    """Mean over long-range tags (column -> decoy mask) of the ROC-AUC on positives and
    decoys only."""
    scores = []
    for column, decoy in decoys.items():
        keep = labels[:, column].astype(bool) | decoy
        roc, _ = per_tag_auc(labels[keep][:, [column]].astype(bool), probs[keep][:, [column]])
        scores.append(roc[0])
    return float(np.nanmean(scores))


def motif_probe(
    model: torch.nn.Module, planted: dict, config: Config, count: int = 40, seed: int = 0
) -> dict[str, float]:
    """How well the model's segment embeddings tell motifs apart, by a logistic probe.

    For each long-range tag, ``count`` inputs hold one event of its first or its second motif,
    alone in one segment of a rendered background; the probe's 5-fold accuracy at telling
    first from second (the distinction the order needs) is compared with telling two
    different tags' first motifs apart. 0.5 is chance.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    design, nuisance = Design(), Nuisance()
    rng = np.random.default_rng([seed, 7])
    transform = EvalTransform(config.augment, config.data.input_frames)
    frames, width = config.data.input_frames, config.model.segment_frames
    empty = Plan(local={}, long_range={})

    def embeddings(signature: Signature) -> np.ndarray:
        rows = []
        for _ in range(count):
            db = render_track(frames, set(), set(), empty, rng, design, nuisance)
            power = 10.0 ** (db.astype(np.float64) / 10.0)
            segment = int(rng.integers(0, frames // width))
            profile = signature.profile(
                rng.uniform(*nuisance.freq_shift_bins), design.peak_width_bins
            )
            level = rng.uniform(*design.motif_level_db)
            start = segment * width + (width - design.motif_frames) // 2
            add_event(power, profile, start, design.motif_frames, level, signature.am_period, rng)
            x = torch.from_numpy(transform((10.0 * np.log10(power)).astype(np.float32)))
            with torch.no_grad():
                rows.append(model.embed_segments(x[None, None])[0, segment].numpy())
        return np.stack(rows)

    def accuracy(a: np.ndarray, b: np.ndarray) -> float:
        x, y = np.concatenate([a, b]), np.r_[np.zeros(len(a)), np.ones(len(b))]
        # Standardised: an untrained embedding's scale is arbitrary and often tiny.
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return float(cross_val_score(probe, x, y, cv=5).mean())

    model.eval()
    motifs = {
        tag: tuple(Signature(**pair[role]) for role in ("first", "second"))
        for tag, pair in planted["signatures"]["long_range"].items()
    }
    firsts = {tag: embeddings(first) for tag, (first, _) in motifs.items()}
    seconds = {tag: embeddings(second) for tag, (_, second) in motifs.items()}
    tags = list(motifs)
    same_tag = [accuracy(firsts[t], seconds[t]) for t in tags]
    other_tag = [
        accuracy(firsts[t], firsts[u]) for t, u in zip(tags, tags[1:] + tags[:1], strict=True)
    ]
    model.train()
    return {
        "first vs second": float(np.mean(same_tag)),
        "two tags' firsts": float(np.mean(other_tag)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=1200)
    parser.add_argument("--decoy-share", type=float, default=Design().decoy_share)
    parser.add_argument("--kind", choices=LONG_RANGE_KINDS, default=Design().long_range_kind)
    parser.add_argument("--data", type=Path, help="dataset folder (default: in the cache)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500, help="score the test split every N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="e.g. cuda")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides")
    parser.add_argument(
        "--predictions", type=Path, help="save the last scoring's test predictions (.npz)"
    )
    parser.add_argument(
        "--probe", action="store_true", help="also probe the embeddings' motif separability"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.predictions and not args.predictions.parent.is_dir():
        parser.error(f"--predictions {args.predictions}: no folder {args.predictions.parent}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    design = Design(decoy_share=args.decoy_share, long_range_kind=args.kind)
    root = dataset(args.tracks, design, args.data)
    overrides = {**RECIPE, **parse_overrides(args.set), "data.root": str(root)}
    config = build_config("quick", {**overrides, "run.seed": args.seed})
    seed_everything(args.seed)
    tables = load_tables(config, root)
    datasets = make_datasets(config, root, tables)
    planted = load_planted(root)
    tags = tables["test"].tags
    columns = {g: [tags.index(t) for t in planted[g]] for g in ("local", "long_range")}
    test_ids = np.asarray(tables["test"].track_ids)
    decoys = {
        tags.index(t): np.isin(test_ids, planted["decoys"]["test"][t])
        for t in planted["long_range"]
    }

    device = torch.device(args.device)
    model = build_model(config.model, config.data.input_frames)
    init_output_bias(model, tables["train"].labels)
    model.to(device)
    optimizer = make_optimizer(config.optim.optimizer, model.parameters(), config.optim.lr, config)
    batch = config.optim.batch_size
    train = make_loader(datasets["train"], batch, True, args.workers, args.seed, drop_last=True)
    test = make_loader(datasets["test"], 64, False, args.workers, args.seed)
    print(f"{root}: {', '.join(f'{len(t)} {s}' for s, t in tables.items())}; {overrides}")
    print("| step | minutes | head | local ROC / PR | long-range ROC / PR | pos-vs-decoy ROC |")
    print("|---:|---:|---|---|---|---:|", flush=True)

    if args.probe:
        print(
            f"| 0 | motif probe accuracy: {motif_probe(model, planted, config, seed=args.seed)} |"
        )
    step, epoch, started = 0, 0, time.time()
    while step < args.steps:
        epoch += 1
        datasets["train"].set_epoch(epoch)
        model.train()
        for x, y in train:
            train_step(model, optimizer, x, y, device, config)
            step += 1
            if step % args.every == 0 or step == args.steps:
                logits, labels = run_inference(model, test, device, config)
                heads = {"combined": probabilities(logits)}
                heads.update(
                    {h: torch.sigmoid(torch.from_numpy(v)).numpy() for h, v in logits.items()}
                )
                minutes = (time.time() - started) / 60
                for head, p in heads.items():
                    g = group_scores(labels, p, columns)
                    print(
                        f"| {step} | {minutes:.1f} | {head} | {g['local'][0]:.3f} / "
                        f"{g['local'][1]:.3f} | {g['long_range'][0]:.3f} / "
                        f"{g['long_range'][1]:.3f} | {positives_vs_decoys(labels, p, decoys):.3f} |",
                        flush=True,
                    )
                if args.predictions:
                    np.savez(args.predictions, labels=labels, ids=test_ids, **heads)
                if args.probe:
                    scores = motif_probe(model, planted, config, seed=args.seed)
                    print(f"| {step} | motif probe accuracy: {scores} |", flush=True)
                model.train()
            if step >= args.steps:
                break


if __name__ == "__main__":
    try:
        main()
    except (ConfigError, SynthError) as err:
        raise SystemExit(f"error: {err}") from None

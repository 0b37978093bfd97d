"""How fast the melspec loader feeds training, and how many bytes a crop really reads.

Builds a temporary dataset of realistic tracks (96 x ~10,000 frames, ~220 s), then measures

1. one crop read three ways: ``np.load`` of the whole file, a memory-map crop, and a memory-map
   crop with ``MADV_RANDOM`` (no kernel read-around), each from a cold and a warm page cache.
   Disk bytes come from ``/proc/self/io`` (read_bytes) after evicting only this benchmark's
   files with ``posix_fadvise(DONTNEED)``: no root, no effect on other processes' files;
2. DataLoader samples/s (``make_loader`` + ``MelspecDataset``) for 0, 1 and 2 workers with
   the training transform (random crop, resized crop, SpecAugment) and with a bare crop.

3. with ``--presets``, each preset's own training loader (`data.loaders.make_datasets` +
   `make_loader`, no worker processes, one torch thread) on a synthetic dataset written at the
   real track lengths (`synth.generate(real_durations=True)`) or on ``--data``: tracks/s per
   CPU-second (what one core delivers, whatever else the machine runs) and per wall second,
   disk MB per track, cold and warm; the same from a float16 copy of what the preset reads
   (submission 2: each track's first 4096 frames; submission 1: whole tracks), and the
   disk's cold sequential read rate.

Run: ``python benchmarks/loader.py`` (about a minute on 2 cores);
``python benchmarks/loader.py --presets submission1 submission2 --tracks 400``.
"""

from __future__ import annotations

import argparse
import contextlib
import mmap
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from moodtheme.augment import TrainTransform, first_frames
from moodtheme.config import AugmentConfig, build_config
from moodtheme.data import synth
from moodtheme.data.jamendo import SUBSETS, SplitTable, read_split
from moodtheme.data.loaders import make_datasets
from moodtheme.data.melspec import MelspecDataset, make_loader, open_melspec


def make_tracks(root: Path, tracks: int, frames: int, seed: int) -> SplitTable:
    """Tracks of float32 dB-like values, lengths jittered +-10% around ``frames``."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(tracks):
        length = int(frames * rng.uniform(0.9, 1.1))
        rel = f"{i % 100:02d}/{1000 + i}.npy"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        mel = rng.normal(-40.0, 15.0, size=(96, length)).astype(np.float32)
        with open(root / rel, "wb") as f:
            np.save(f, mel)
            f.flush()
            os.fsync(f.fileno())  # dirty pages cannot be evicted: the cold reads need them on disk
        paths.append(rel)
    labels = rng.random((tracks, 56)) < 0.05
    return SplitTable(
        track_ids=[f"track_{1000 + i}" for i in range(tracks)],
        artist_ids=["artist"] * tracks,
        album_ids=["album"] * tracks,
        paths=paths,
        durations=np.full(tracks, frames * 256 / 12000),
        labels=labels,
        tags=[f"mood/theme---t{j}" for j in range(56)],
        source=root / "benchmark.tsv",
    )


def evict(paths: list[Path]) -> bool:
    """Drop these files from the page cache (Linux); False where that is not possible."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def disk_read_bytes() -> int | None:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("read_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def read_full(path: Path, start: int, crop: int) -> np.ndarray:
    return np.load(path)[:, start : start + crop].copy()


def read_mmap(path: Path, start: int, crop: int) -> np.ndarray:
    return np.array(open_melspec(path)[:, start : start + crop])


def read_mmap_random(path: Path, start: int, crop: int) -> np.ndarray:
    mel = open_melspec(path)
    mel._mmap.madvise(mmap.MADV_RANDOM)  # numpy keeps the mmap object here
    return np.array(mel[:, start : start + crop])


READERS = {
    "np.load whole file": read_full,
    "memmap crop": read_mmap,
    "memmap crop, MADV_RANDOM": read_mmap_random,
}


def bench_reads(
    paths: list[Path], crop: int, seed: int
) -> list[tuple[str, str, float, float | None]]:
    """(reader, cache, ms per sample, disk MB per sample) for every reader, cold then warm."""
    rng = np.random.default_rng(seed)
    starts = [int(rng.integers(0, open_melspec(p).shape[1] - crop + 1)) for p in paths]
    rows = []
    for name, reader in READERS.items():
        if name.endswith("MADV_RANDOM") and not hasattr(mmap, "MADV_RANDOM"):
            continue
        for cache in ("cold", "warm"):
            cold_ok = evict(paths) if cache == "cold" else True
            before = disk_read_bytes()
            tick = time.perf_counter()
            for path, start in zip(paths, starts, strict=True):
                reader(path, start, crop)
            ms = 1e3 * (time.perf_counter() - tick) / len(paths)
            after = disk_read_bytes()
            disk = None
            if cold_ok and before is not None and after is not None:
                disk = (after - before) / len(paths) / 1e6
            rows.append((name, cache if cold_ok else "warm?", ms, disk))
    return rows


def bench_loader(
    dataset: MelspecDataset, batch_size: int, workers: int, epochs: int, cold: bool
) -> float:
    """Samples/s over ``epochs`` epochs, after the first batch (worker start-up excluded)."""
    paths = [dataset.path(i) for i in range(len(dataset))]
    loader = make_loader(dataset, batch_size, True, workers, seed=0, drop_last=True)
    samples, elapsed = 0, 0.0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        if cold:
            evict(paths)
        batches = iter(loader)
        if epoch == 0:
            next(batches)
        tick = time.perf_counter()
        for x, _ in batches:
            samples += x.shape[0]
        elapsed += time.perf_counter() - tick
    del loader  # shuts the persistent workers down
    return samples / elapsed


def real_size_dataset(root: Path, tracks: int, seed: int) -> dict[str, SplitTable]:
    """A synthetic dataset at the real track lengths, flushed to disk so it can be evicted."""
    design = synth.Design(min_positives=0)  # lets a few hundred tracks exist
    synth.generate(root, tracks=tracks, seed=seed, design=design, real_durations=True)
    for path in root.rglob("*.npy"):
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    return split_tables(root)


def split_tables(root: Path) -> dict[str, SplitTable]:
    folder = root / "splits" / "split-0"
    return {s: read_split(folder / f"autotagging_moodtheme-{s}.tsv") for s in SUBSETS}


# Each preset's training window as it reads it, with and without the augmentations.
AUGMENTATIONS = {
    "train transform": {},
    "window only": {"augment.resized_crop_p": 0.0, "augment.specaugment_p": 0.0},
}


def bench_preset(
    preset: str, overrides: dict, root: Path, tables: dict[str, SplitTable], cold: bool, epochs: int
) -> tuple[float, float, float | None]:
    """(tracks per CPU-second, tracks per wall second, disk MB per track) of the preset's
    training loader in this process: one core's worth, whatever else the machine runs."""
    config = build_config(preset, {**overrides, "data.num_workers": 0})
    dataset = make_datasets(config, root, tables)["train"]
    paths = [dataset.path(i) for i in range(len(dataset))]
    loader = make_loader(dataset, config.optim.batch_size, True, 0, seed=0, drop_last=True)
    if not cold:  # warm the page cache with one untimed epoch
        for _ in loader:
            pass
    tracks, cpu, wall, disk = 0, 0.0, 0.0, 0
    for epoch in range(1, epochs + 1):
        dataset.set_epoch(epoch)
        cold_ok = evict(paths) if cold else False
        before, tick, tock = disk_read_bytes(), time.process_time(), time.perf_counter()
        for x, _ in loader:
            tracks += x.shape[0]
        cpu += time.process_time() - tick
        wall += time.perf_counter() - tock
        after = disk_read_bytes()
        disk += (after - before) if before is not None and after is not None else 0
    measured = cold_ok or not cold
    return tracks / cpu, tracks / wall, disk / tracks / 1e6 if measured else None


def half_precision_copy(root: Path, table: SplitTable, dest: Path, frames: int | None) -> Path:
    """A float16 copy of what a preset reads, as a melspec root of its own: each training
    track's first ``frames`` frames (tiled, as window='first' takes them), or whole tracks."""
    for rel in table.paths:
        mel = open_melspec(root / rel)
        window = first_frames(mel, frames) if frames else np.asarray(mel)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(dest / rel, "wb") as f:
            np.save(f, window.astype(np.float16))
            f.flush()
            os.fsync(f.fileno())
    return dest


def cold_read_rate(paths: list[Path]) -> float | None:
    """MB/s of reading these files whole, one after the other, from a cold page cache."""
    if not evict(paths):
        return None
    total, tick = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                total += len(chunk)
    return total / (time.perf_counter() - tick) / 1e6


def print_presets(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(dir=args.dir, prefix="moodtheme-real-"))
        )
        if args.data:
            root = args.data
            tables = split_tables(root)
        else:
            root = tmp / "data"
            tick = time.perf_counter()
            tables = real_size_dataset(root, args.tracks, args.seed)
            print(f"real-size synthetic dataset built in {time.perf_counter() - tick:.0f} s")
        files = [root / p for p in tables["train"].paths]
        sizes = np.array([open_melspec(p).shape[1] for p in files])
        print(
            f"{root}: {len(files)} training tracks, frames mean {sizes.mean():.0f}, median "
            f"{np.median(sizes):.0f}, {np.mean([p.stat().st_size for p in files]) / 1e6:.2f} MB "
            f"mean; {np.mean(sizes < 4096):.0%} shorter than 4096 frames, "
            f"{np.mean(sizes < 6590):.0%} than 6590"
        )
        rate = cold_read_rate(files)
        print(f"cold sequential read of those files: {rate or float('nan'):.0f} MB/s\n")
        print(
            "| preset | files | transform | page cache | tracks / CPU-s | tracks / s (wall) "
            "| disk MB / track |"
        )
        print("|---|---|---|---|---:|---:|---:|")
        for preset in args.presets:
            config = build_config(preset)
            window = config.data.input_frames if config.data.window == "first" else None
            copy = half_precision_copy(root, tables["train"], tmp / f"fp16-{preset}", window)
            sources = {"float32 melspecs": root, f"float16 {'window' if window else 'copy'}": copy}
            for files_label, source in sources.items():
                for label, overrides in AUGMENTATIONS.items():
                    for cold in (True, False):
                        per_cpu, per_wall, disk = bench_preset(
                            preset, overrides, source, tables, cold, args.epochs
                        )
                        shown = "n/a" if disk is None else f"{disk:.2f}"
                        print(
                            f"| {preset} | {files_label} | {label} | {'cold' if cold else 'warm'} "
                            f"| {per_cpu:.0f} | {per_wall:.0f} | {shown} |",
                            flush=True,
                        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=64, help="tracks in the temporary dataset")
    parser.add_argument("--frames", type=int, default=10_000, help="mean frames per track (~220 s)")
    parser.add_argument("--crop", type=int, default=4096, help="frames per sample")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="0,1,2", help="worker counts to compare")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per loader measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--presets", nargs="+", help="measure these presets' training loaders instead (3. above)"
    )
    parser.add_argument(
        "--data", type=Path, help="with --presets: a melspec root instead of real-size synthetic"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.presets:
        print_presets(args)
        return 0

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="moodtheme-loader-") as tmp:
        root = Path(tmp)
        tick = time.perf_counter()
        table = make_tracks(root, args.tracks, args.frames, args.seed)
        paths = [root / p for p in table.paths]
        file_mb = np.mean([p.stat().st_size for p in paths]) / 1e6
        crop_mb = 96 * args.crop * 4 / 1e6
        print(
            f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"python {platform.python_version()}, torch {torch.__version__}"
        )
        print(
            f"dataset: {args.tracks} tracks, mean {file_mb:.2f} MB "
            f"({file_mb * 1e6 / 4 / 96:.0f} frames), built in {time.perf_counter() - tick:.1f} s"
        )
        print(
            f"crop: 96 x {args.crop} float32 = {crop_mb:.2f} MB "
            f"= {100 * crop_mb / file_mb:.0f}% of a file\n"
        )

        print("| read | page cache | ms / sample | disk MB / sample |")
        print("|---|---|---:|---:|")
        for name, cache, ms, disk in bench_reads(paths, args.crop, args.seed):
            shown = "n/a" if disk is None else f"{disk:.2f}"
            print(f"| {name} | {cache} | {ms:.2f} | {shown} |")

        transforms = {
            "train transform": TrainTransform(AugmentConfig(), args.crop),
            "crop only": TrainTransform(
                AugmentConfig(resized_crop_p=0.0, specaugment_p=0.0), args.crop
            ),
        }
        print(f"\n| transform | workers | page cache | samples/s (batch {args.batch_size}) |")
        print("|---|---:|---|---:|")
        for label, transform in transforms.items():
            dataset = MelspecDataset(root, table, transform, seed=args.seed)
            for workers in (int(w) for w in args.workers.split(",")):
                for cold in (False, True) if label == "crop only" else (False,):
                    rate = bench_loader(dataset, args.batch_size, workers, args.epochs, cold)
                    cache = "cold" if cold else "warm"
                    print(f"| {label} | {workers} | {cache} | {rate:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

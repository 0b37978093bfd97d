import re
from pathlib import Path

import numpy as np
import pytest
import torch

from moodtheme.data.jamendo import SplitTable
from moodtheme.data.melspec import (
    MISSING,
    NON_FINITE,
    TOO_SHORT,
    UNREADABLE,
    WRONG_SHAPE,
    MelspecDataset,
    MelspecError,
    make_loader,
    open_melspec,
)

N_MELS = 96
CROP = 16


def random_crop(mel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Stands in for moodtheme.augment: slices the memory map, pads short tracks with zeros.
    frames = mel.shape[1]
    start = int(rng.integers(0, max(frames - CROP, 0) + 1))
    crop = np.asarray(mel[:, start : start + CROP], dtype=np.float32)
    return np.pad(crop, ((0, 0), (0, CROP - crop.shape[1])))


def make_root(tmp_path: Path, n: int = 12, frames: int = 40) -> tuple[Path, SplitTable]:
    root = tmp_path / "data"
    paths = []
    for i in range(n):
        rel = f"{i % 3:02d}/{i}.npy"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        # Track i holds the value i everywhere except the frame index in row 0.
        mel = np.full((N_MELS, frames + i), float(i), dtype=np.float32)
        mel[0] = np.arange(frames + i)
        np.save(root / rel, mel)
        paths.append(rel)
    labels = np.zeros((n, 56), dtype=bool)
    labels[np.arange(n), np.arange(n) % 56] = True
    table = SplitTable(
        track_ids=[f"track_{i}" for i in range(n)],
        artist_ids=["a"] * n,
        album_ids=["b"] * n,
        paths=paths,
        durations=np.full(n, 30.0),
        labels=labels,
        tags=[f"mood/theme---t{j}" for j in range(56)],
        source=tmp_path / "x.tsv",
    )
    return root, table


def test_open_melspec_returns_a_read_only_memory_map(tmp_path):
    path = tmp_path / "ok.npy"
    np.save(path, np.ones((N_MELS, 7), dtype=np.float32))
    mel = open_melspec(path)
    assert isinstance(mel, np.memmap) and mel.shape == (N_MELS, 7)
    assert not mel.flags.writeable
    np.save(path, np.ones((N_MELS, 7), dtype=np.float16))  # float-like dtypes are accepted
    assert open_melspec(path).dtype == np.float16


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    cases = {}

    def case(name, problem, writer):
        path = tmp_path / f"{name}.npy"
        writer(path)
        cases[name] = (path, problem)

    case("missing", MISSING, lambda p: None)
    case("garbage", UNREADABLE, lambda p: p.write_bytes(b"not an npy file at all"))
    case("ints", UNREADABLE, lambda p: np.save(p, np.ones((N_MELS, 5), dtype=np.int16)))
    case("rows", WRONG_SHAPE, lambda p: np.save(p, np.ones((80, 5), dtype=np.float32)))
    case("3d", WRONG_SHAPE, lambda p: np.save(p, np.ones((1, N_MELS, 5), dtype=np.float32)))
    case("empty", TOO_SHORT, lambda p: np.save(p, np.ones((N_MELS, 0), dtype=np.float32)))

    def truncated(p):
        np.save(p, np.ones((N_MELS, 50), dtype=np.float32))
        p.write_bytes(p.read_bytes()[:1000])

    case("truncated", UNREADABLE, truncated)
    case("directory", UNREADABLE, lambda p: p.mkdir())
    return cases


def test_open_melspec_names_every_kind_of_bad_file(tmp_path):
    for name, (path, problem) in bad_files(tmp_path).items():
        with pytest.raises(MelspecError) as err:
            open_melspec(path)
        assert err.value.problem == problem, name
        assert err.value.path == path
        assert str(path) in str(err.value)


def test_item_is_a_crop_of_the_memory_map_with_its_labels(tmp_path):
    root, table = make_root(tmp_path)
    seen = []

    def spy(mel, rng):
        seen.append(type(mel))
        return random_crop(mel, rng)

    ds = MelspecDataset(root, table, spy, seed=3)
    x, y = ds[5]
    assert seen == [np.memmap]  # the transform gets the map, not a loaded array
    assert x.dtype == torch.float32 and x.shape == (1, N_MELS, CROP)
    assert torch.all(x[0, 1:] == 5.0)
    start = int(x[0, 0, 0])
    assert x[0, 0].tolist() == list(range(start, start + CROP))
    assert y.dtype == torch.float32 and y.shape == (56,)
    assert y.nonzero().flatten().tolist() == [5]
    assert x.is_contiguous()


def test_items_depend_on_seed_epoch_and_index_only(tmp_path):
    root, table = make_root(tmp_path, frames=400)
    ds = MelspecDataset(root, table, random_crop, seed=1)
    first = [ds[i][0] for i in range(len(ds))]
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))
    ds.set_epoch(1)
    assert ds.epoch == 1
    moved = sum(not torch.equal(a, ds[i][0]) for i, a in enumerate(first))
    assert moved >= len(ds) - 2  # a new epoch draws new crops
    ds.set_epoch(0)
    assert all(torch.equal(a, ds[i][0]) for i, a in enumerate(first))
    other = MelspecDataset(root, table, random_crop, seed=2)
    assert any(not torch.equal(a, other[i][0]) for i, a in enumerate(first))


def test_non_finite_crop_raises_naming_the_file(tmp_path):
    root, table = make_root(tmp_path, n=2, frames=200)
    path = root / table.paths[1]
    mel = np.load(path)
    mel[3, 150] = np.nan
    np.save(path, mel)

    def crop_at(start):
        return lambda m, rng: np.asarray(m[:, start : start + CROP])

    # The NaN is outside the first crop: only the frames read are checked.
    x, _ = MelspecDataset(root, table, crop_at(0))[1]
    assert torch.isfinite(x).all()
    with pytest.raises(MelspecError) as err:
        MelspecDataset(root, table, crop_at(140))[1]
    assert err.value.problem == NON_FINITE and str(path) in str(err.value)


def test_transform_returning_a_view_of_the_map_is_copied(tmp_path):
    root, table = make_root(tmp_path, n=1)
    x, _ = MelspecDataset(root, table, lambda m, rng: m)[0]  # whole-file "crop": a memmap view
    x += 1  # writable, and owned by the tensor
    assert float(x[0, 1, 0]) == 1.0
    assert float(np.load(root / table.paths[0])[1, 0]) == 0.0


def test_transform_returning_a_wrong_shape_names_the_file(tmp_path):
    root, table = make_root(tmp_path, n=1)
    with pytest.raises(MelspecError, match=r"wrong-shape melspec .*0\.npy: the transform returned"):
        MelspecDataset(root, table, lambda m, rng: np.zeros((N_MELS,)))[0]


def loader_batches(loader, epoch):
    loader.dataset.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def same_batches(a, b):
    return len(a) == len(b) and all(
        torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def test_loader_order_and_crops_are_reproducible_across_workers_and_resume(tmp_path):
    torch.set_num_threads(1)
    root, table = make_root(tmp_path, frames=300)
    loaders = [
        make_loader(MelspecDataset(root, table, random_crop, seed=7), 4, True, workers, seed=7)
        for workers in (0, 2)
    ]
    assert loaders[1].persistent_workers and loaders[1].worker_init_fn is not None
    runs = [[loader_batches(loader, epoch) for epoch in range(3)] for loader in loaders]
    serial, parallel = runs
    for epoch in range(3):
        # Persistent workers follow set_epoch: same data whatever the worker count.
        assert same_batches(serial[epoch], parallel[epoch])
    assert not same_batches(serial[0], serial[1])
    order0 = torch.cat([y.argmax(1) for _, y in serial[0]]).tolist()
    order1 = torch.cat([y.argmax(1) for _, y in serial[1]]).tolist()
    assert sorted(order0) == list(range(len(table))) and order0 != order1

    # A fresh loader resumed at epoch 2 replays epoch 2 exactly.
    resumed = make_loader(MelspecDataset(root, table, random_crop, seed=7), 4, True, 0, seed=7)
    assert same_batches(loader_batches(resumed, 2), serial[2])


def test_unshuffled_loader_keeps_file_order_and_drop_last(tmp_path):
    root, table = make_root(tmp_path, n=10)
    loader = make_loader(
        MelspecDataset(root, table, random_crop), 4, False, 0, seed=0, drop_last=True
    )
    batches = list(loader)
    assert len(batches) == 2
    assert torch.cat([y.argmax(1) for _, y in batches]).tolist() == list(range(8))


def test_bad_file_during_training_raises_melspec_error_from_a_worker(tmp_path):
    root, table = make_root(tmp_path, n=4)
    bad = root / table.paths[2]
    bad.write_bytes(b"\x93NUMPY garbage")
    loader = make_loader(MelspecDataset(root, table, random_crop), 2, False, 1, seed=0)
    with pytest.raises(MelspecError, match=re.escape(str(bad))):
        list(loader)
    loader = make_loader(MelspecDataset(root, table, random_crop), 2, False, 0, seed=0)
    with pytest.raises(MelspecError, match=re.escape(str(bad))) as err:
        list(loader)
    assert err.value.problem == UNREADABLE

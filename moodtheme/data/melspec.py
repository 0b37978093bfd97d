"""Memory-mapped mel-spectrograms: validated opening, the training dataset and its loader.

A track's melspec is ``ROOT/NN/ID.npy``, float32, ``n_mels x T``. Tracks are minutes long and
the model sees a crop of a few thousand frames, so files are memory-mapped and the transform
slices the map: only the crop is copied into the process. (From a cold page cache the kernel's
read-around still fetches most of the file; docs/benchmarks.md has the figures.)
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from moodtheme.data.jamendo import SplitTable

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Kinds of bad file, shared with `moodtheme.data.check` so both report the same words.
MISSING = "missing"
UNREADABLE = "unreadable"
WRONG_SHAPE = "wrong-shape"
NON_FINITE = "non-finite"
TOO_SHORT = "too-short"


class MelspecError(RuntimeError):
    """A melspec file that cannot be used; the message names the file.

    ``path`` and ``problem`` (one of the kinds above) are set where the file was examined; a
    copy re-raised by a DataLoader worker keeps the message only.
    """

    def __init__(self, message: str, path: Path | None = None, problem: str | None = None) -> None:
        message = _unwrap_worker_message(message, type(self).__name__)
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.problem = problem
        self.detail = message

    @classmethod
    def bad_file(cls, path: Path, problem: str, detail: str) -> MelspecError:
        error = cls(
            f"{problem} melspec {path}: {detail}; `python -m moodtheme.data check --data ROOT` "
            "lists every bad file",
            path,
            problem,
        )
        error.detail = detail
        return error


def _unwrap_worker_message(message: str, name: str) -> str:
    """The original one-line message inside the text a DataLoader worker sends back.

    torch re-raises a worker's exception in the main process as ``type(text)``, where the text
    is "Caught NAME in DataLoader worker process N." and the worker's whole traceback. Its last
    line is ``module.NAME: message``; keeping that message makes a bad file read by a worker
    report exactly as one read with num_workers=0.
    """
    if not message.startswith(f"Caught {name} ") or "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().rsplit("\n", 1)[-1]
    _, found, original = last.partition(f"{name}: ")
    return original if found else message


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """What can go wrong opening ``path`` as a .npy file, as one-line MelspecErrors."""
    try:
        yield
    except FileNotFoundError:
        raise MelspecError.bad_file(path, MISSING, "file not found") from None
    except IsADirectoryError:
        raise MelspecError.bad_file(path, UNREADABLE, "is a directory, not a .npy file") from None
    except (OSError, ValueError, EOFError) as err:
        raise MelspecError.bad_file(path, UNREADABLE, f"not a readable .npy file ({err})") from None


def open_melspec(path: Path, n_mels: int = 96) -> np.ndarray:
    """A read-only memory map of ``path``, checked to be a 2-D float array with n_mels rows."""
    path = Path(path)
    # numpy refuses a bad header or a file shorter than its header promises here, before
    # anything is mapped, so a truncated file cannot fault later.
    with _read_errors(path):
        mel = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(mel, np.ndarray):
        raise MelspecError.bad_file(path, UNREADABLE, "holds an .npz archive, not a single array")
    _check_layout(path, mel.dtype, mel.shape, n_mels)
    return mel


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def melspec_shape(path: Path, n_mels: int = 96) -> tuple[int, int]:
    """The ``(n_mels, frames)`` of ``path`` from its .npy header alone, validated as
    :func:`open_melspec` validates the array, and refused when the file is shorter than
    the header promises. Reads a few hundred bytes, so a whole dataset takes seconds."""
    path = Path(path)
    with _read_errors(path), open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in _HEADER_READERS:  # v3 (utf-8 field names): let numpy parse it
            return open_melspec(path, n_mels).shape
        shape, _, dtype = _HEADER_READERS[version](f)
        _check_layout(path, dtype, shape, n_mels)
        expected = f.tell() + int(np.prod(shape)) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
    if size < expected:
        raise MelspecError.bad_file(
            path, UNREADABLE, f"truncated: {size} bytes, its header promises {expected}"
        )
    return shape


def _check_layout(path: Path, dtype: np.dtype, shape: tuple[int, ...], n_mels: int) -> None:
    if dtype.kind != "f":
        raise MelspecError.bad_file(path, UNREADABLE, f"dtype {dtype} is not floating point")
    if len(shape) != 2 or shape[0] != n_mels:
        raise MelspecError.bad_file(
            path, WRONG_SHAPE, f"shape {shape}, expected ({n_mels}, frames)"
        )
    if shape[1] < 1:
        raise MelspecError.bad_file(path, TOO_SHORT, "has no frames")


class MelspecDataset(Dataset):
    """``(x: FloatTensor[1, n_mels, F], y: FloatTensor[n_tags])`` per track of a split table.

    ``transform(mel_memmap, rng)`` crops or pads the memory map to F frames. Its RNG is seeded
    from (seed, epoch, index), so an item is the same whatever worker loads it; call
    :meth:`set_epoch` before each epoch. The epoch lives in shared memory, which keeps
    persistent workers in step with the main process.

    ``stream`` tells apart datasets that must draw independently under one seed: the
    training set and its second copy for mixup partners, validation and test. Its shuffle
    order (:class:`EpochShuffleSampler`) differs by stream too. Stream 0 keeps the seeding
    of runs made before streams existed.
    """

    def __init__(
        self,
        root: Path,
        table: SplitTable,
        transform: Transform,
        seed: int = 0,
        n_mels: int = 96,
        stream: int = 0,
    ) -> None:
        self.root = Path(root)
        self.table = table
        self.transform = transform
        self.seed = int(seed)
        self.stream = int(stream)
        self.n_mels = n_mels
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._labels = torch.from_numpy(table.labels.astype(np.float32))

    def __len__(self) -> int:
        return len(self.table)

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def path(self, index: int) -> Path:
        return self.root / self.table.paths[index]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index), *_stream_key(self)])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.path(index)
        mel = open_melspec(path, self.n_mels)
        try:
            crop = self.transform(mel, self.rng(index))
        except OSError as err:
            raise MelspecError.bad_file(path, UNREADABLE, f"read failed ({err})") from err
        crop = np.asarray(crop)
        if crop.ndim != 2 or crop.shape[0] != self.n_mels:
            raise MelspecError.bad_file(
                path,
                WRONG_SHAPE,
                f"the transform returned shape {crop.shape}, expected "
                f"({self.n_mels}, frames) (file shape {mel.shape})",
            )
        if not crop.flags.writeable:
            # A view into the read-only map: copy it before torch shares the memory.
            crop = crop.copy()
        crop = np.ascontiguousarray(crop, dtype=np.float32)
        if not np.isfinite(crop).all():
            bad = int(crop.size - np.isfinite(crop).sum())
            raise MelspecError.bad_file(
                path, NON_FINITE, f"{bad} NaN/inf values in the frames read"
            )
        return torch.from_numpy(crop).unsqueeze(0), self._labels[index]


class EpochShuffleSampler(Sampler[int]):
    """A permutation seeded from (seed, epoch, the dataset's stream), so resuming at epoch k
    gives epoch k's order.

    The epoch is read from ``dataset.epoch`` when iteration starts (MelspecDataset.set_epoch);
    datasets without one advance a private counter instead.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self._iterations = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        epoch = getattr(self.dataset, "epoch", None)
        if epoch is None:
            epoch, self._iterations = self._iterations, self._iterations + 1
        key = [self.seed, int(epoch), 0x5EED, *_stream_key(self.dataset)]
        order = np.random.default_rng(key).permutation(len(self))
        return iter(order.tolist())


def _stream_key(dataset: Dataset) -> list[int]:
    stream = getattr(dataset, "stream", 0)
    return [stream] if stream else []


def _init_worker(worker_id: int) -> None:
    # Augmentation draws from the per-item RNG; this only keeps any stray use of the global
    # RNGs distinct per worker and reproducible, and stops workers oversubscribing the CPU.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose order and augmentation depend only on (seed, epoch)."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochShuffleSampler(dataset, seed) if shuffle else None,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_init_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )

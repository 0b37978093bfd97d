"""From a config to the loaders a run reads: the data root, the split tables, one dataset per
split, and the training loader's mixup partner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from moodtheme.augment import EvalTransform, TrainTransform
from moodtheme.config import Config
from moodtheme.data import jamendo
from moodtheme.data.melspec import MelspecDataset, make_loader
from moodtheme.errors import TrainingError

# Each dataset draws its augmentation and order from its own stream under the run's seed, so
# the mixup partners are not the training examples' twins and evaluation draws are their own.
STREAMS = {"train": 0, "mixup_partner": 1, "validation": 2, "test": 3}


def resolve_data_root(root: str | Path | None) -> Path:
    """The melspec root: ``root``, or the cached synthetic dataset when it is None."""
    if root is None:
        from moodtheme.data.synth import default_dataset

        return default_dataset()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise TrainingError(
            f"data.root={path} is not a directory; point --data at the folder holding NN/ID.npy"
        )
    return path


def load_tables(config: Config, root: Path) -> dict[str, jamendo.SplitTable]:
    splits_dir = jamendo.resolve_splits_dir(
        root, Path(config.data.splits_dir) if config.data.splits_dir else None
    )
    tags = jamendo.load_tags()
    tables = {}
    for subset in jamendo.SUBSETS:
        table = jamendo.read_split(jamendo.split_tsv(config.data.split, subset, splits_dir), tags)
        if config.data.limit_tracks is not None:
            table = table.subset(np.arange(min(len(table), config.data.limit_tracks)))
        tables[subset] = table
    if tables["train"].labels.shape[1] != config.model.num_tags:
        raise TrainingError(
            f"the tag list has {tables['train'].labels.shape[1]} tags but model.num_tags="
            f"{config.model.num_tags}"
        )
    return tables


def uses_partner_loader(config: Config) -> bool:
    """Whether mixup takes its partners from a second training loader (the authors' way)."""
    a = config.augment
    return a.mixup_alpha > 0 and a.mixup_partner == "second_loader"


def make_datasets(
    config: Config, root: Path, tables: dict[str, jamendo.SplitTable]
) -> dict[str, MelspecDataset]:
    """One dataset per split, and ``mixup_partner`` (the training set drawn again) when
    :func:`uses_partner_loader`. Evaluation uses the training transform when
    ``augment.augment_eval`` is set, as the authors' submission 2 did."""
    frames, window = config.data.input_frames, config.data.window
    train_tf = TrainTransform(config.augment, frames, window)
    eval_tf = (
        train_tf if config.augment.augment_eval else EvalTransform(config.augment, frames, window)
    )
    sources = dict(tables)
    if uses_partner_loader(config):
        sources["mixup_partner"] = tables["train"]
    return {
        subset: MelspecDataset(
            root,
            table,
            train_tf if subset in ("train", "mixup_partner") else eval_tf,
            seed=config.run.seed,
            n_mels=config.data.n_mels,
            stream=STREAMS[subset],
        )
        for subset, table in sources.items()
    }


@dataclass
class TrainingData:
    """Everything a run reads: the tables, and a loader per dataset (``train``, the optional
    ``mixup_partner``, ``validation``, ``test``)."""

    root: Path
    split: int
    tables: dict[str, jamendo.SplitTable]
    loaders: dict[str, torch.utils.data.DataLoader]

    @classmethod
    def build(cls, config: Config, root: Path) -> TrainingData:
        """The split tables of ``root`` (``config.data``) and their loaders."""
        return cls.from_tables(config, root, load_tables(config, root))

    @classmethod
    def from_tables(
        cls, config: Config, root: Path, tables: dict[str, jamendo.SplitTable]
    ) -> TrainingData:
        datasets = make_datasets(config, root, tables)
        batch, workers, seed = config.optim.batch_size, config.data.num_workers, config.run.seed
        # Both training loaders drop their last partial batch, so they end together.
        drop_last = len(datasets["train"]) > batch
        loaders = {
            name: make_loader(
                dataset,
                batch,
                shuffle=name in ("train", "mixup_partner"),
                num_workers=workers,
                seed=seed,
                drop_last=drop_last and name in ("train", "mixup_partner"),
            )
            for name, dataset in datasets.items()
        }
        return cls(root, config.data.split, tables, loaders)

    def set_epoch(self, epoch: int) -> None:
        """Every dataset draws epoch ``epoch``'s order and augmentation."""
        for loader in self.loaders.values():
            loader.dataset.set_epoch(epoch)

    def evaluation_loaders(self) -> dict[str, torch.utils.data.DataLoader]:
        return {s: self.loaders[s] for s in ("validation", "test")}

    def describe(self) -> str:
        sizes = ", ".join(f"{len(t)} {s}" for s, t in self.tables.items())
        return f"data: {self.root} (split {self.split}: {sizes})"

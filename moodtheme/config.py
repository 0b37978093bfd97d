"""One typed, validated configuration for data, model, augmentation, optimisation and run.

Everything that `tune` searches and `ablations` toggles is a field here, addressed by a
dotted key (``model.attention.heads``). Presets reproduce the two AMLAG submissions and a
CPU-sized ``quick`` variant of submission 2.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moodtheme.presets import PRESETS


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message names the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    root: str | None = Field(
        None, description="Directory holding NN/ID.npy melspecs; None uses the synthetic dataset."
    )
    split: int = Field(0, ge=0, le=4, description="MTG-Jamendo split; 0 is the MediaEval split.")
    splits_dir: str | None = Field(
        None,
        description="Directory with the split TSVs; None uses ROOT's TSVs or the bundled ones.",
    )
    input_frames: int = Field(4096, ge=16, description="Frames fed to the model per example.")
    window: Literal["random", "centre", "first"] = Field(
        "random",
        description="Which input_frames frames of a track the model sees. 'random': a "
        "random crop in training and the centre in evaluation, a short track padded around "
        "its centre (submission 1). 'centre': the centre crop in training too. 'first': "
        "the first input_frames frames everywhere, a short track tiled from its start "
        "(the authors' submission 2 code).",
    )
    n_mels: int = Field(96, ge=8)
    num_workers: int = Field(2, ge=0)
    limit_tracks: int | None = Field(
        None, ge=1, description="Use only the first N tracks of each split (smoke runs)."
    )


class AttentionConfig(_Section):
    enabled: bool = True
    heads: int = Field(4, ge=1)
    layers: int = Field(2, ge=1)
    ff_dim: int = Field(1024, ge=1)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    hidden_dropout: float = Field(0.2, ge=0.0, lt=1.0)


class ModelConfig(_Section):
    arch: Literal["whole", "segments"] = Field(
        "segments",
        description="'whole' feeds the entire input to the CNN (submission 1); "
        "'segments' cuts it into segments with a self-attention head (submission 2).",
    )
    backbone: str = Field("mobilenet_v2", description="A name in moodtheme.models.BACKBONES.")
    width_mult: float = Field(1.0, gt=0.0, le=4.0)
    pretrained: str = Field(
        "none", description="'imagenet', 'none', or a path to a backbone state_dict (.pth)."
    )
    num_tags: int = Field(56, ge=1)
    segments: int = Field(16, ge=1)
    segment_frames: int = Field(256, ge=8)
    embed_dim: int = Field(256, ge=8)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    embedding_padding: Literal[0, 1] = Field(
        0,
        description="Zero padding of the 3x3 convolution that turns a segment's feature map "
        "into its embedding. The authors' submission 2 has none (0), so it needs a feature map "
        "of at least 3x3; 1 keeps the map's size, for short segments.",
    )
    output_bias: Literal["default", "prior"] = Field(
        "default",
        description="Initial bias of each head's output layer: 'default', PyTorch's uniform "
        "initialisation (as in the authors' code), or 'prior', the log-odds of each tag's "
        "training frequency.",
    )
    attention: AttentionConfig = AttentionConfig()

    def head_names(self) -> tuple[str, ...]:
        """The names of the model's output heads, the keys of its output dict."""
        if self.arch == "whole":
            return ("whole",)
        return ("attention", "segment") if self.attention.enabled else ("segment",)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelConfig:
        if self.attention.enabled and self.embed_dim % self.attention.heads:
            raise ValueError(
                f"model.attention.heads={self.attention.heads} must divide "
                f"model.embed_dim={self.embed_dim}"
            )
        return self


class AugmentConfig(_Section):
    wrap_pad_p: float = Field(
        0.5, ge=0.0, le=1.0, description="Wrap-pad probability, else constant."
    )
    resized_crop_p: float = Field(0.33, ge=0.0, le=1.0)
    resized_crop_scale: tuple[float, float] = (0.8, 1.0)
    resized_crop_ratio: tuple[float, float] = (1.7, 2.3)
    specaugment_p: float = Field(0.5, ge=0.0, le=1.0)
    specaugment_max_masks: int = Field(2, ge=1)
    freq_mask_frac: float = Field(0.15, ge=0.0, le=1.0)
    time_mask_frac: float = Field(0.2, ge=0.0, le=1.0)
    mixup_alpha: float = Field(1.0, ge=0.0, description="Beta(alpha, alpha) mixup; 0 disables it.")
    mixup_partner: Literal["second_loader", "in_batch"] = Field(
        "in_batch",
        description="Where each example's mixup partner comes from. 'second_loader': the "
        "same position of a second loader over the training set, shuffled and augmented "
        "independently (the authors' code; a step reads twice the tracks). 'in_batch': a "
        "random permutation of the batch itself.",
    )
    augment_eval: bool = Field(
        False,
        description="Give validation and test inputs the training augmentation (random "
        "resized crop, SpecAugment), as the authors' submission 2 loaders did. Their draws "
        "are fixed by (seed, epoch, track), so a run's scores are reproducible.",
    )
    scale: float = Field(100.0, gt=0.0, description="Inputs are divided by this (dB / 100).")


class OptimConfig(_Section):
    optimizer: Literal["adam", "amsgrad", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: int = Field(8, ge=1)
    epochs: int = Field(120, ge=1)
    scheduler: Literal["none", "plateau"] = "none"
    plateau_factor: float = Field(0.1, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)
    switch_epoch: int | None = Field(
        60, ge=1, description="Epoch at which Adam gives way to SGD; None keeps Adam throughout."
    )
    sgd_lr: float = Field(1e-3, gt=0.0)
    sgd_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    sgd_weight_decay: float = Field(1e-4, ge=0.0)
    lr_drop_every: int = Field(
        20, ge=1, description="After the switch, reload the best model and drop lr every N epochs."
    )
    lr_drops: list[float] = Field(default_factory=lambda: [1e-4, 1e-5])


class EarlyStoppingConfig(_Section):
    mode: Literal["per_class", "joint"] = Field(
        "joint",
        description="'per_class' takes each tag's prediction from its own lowest-validation-loss "
        "epoch; 'joint' keeps one best epoch for all tags.",
    )
    monitor: Literal["val_loss", "roc_auc_macro", "pr_auc_macro"] = "roc_auc_macro"
    head: Literal["combined", "attention", "segment", "whole"] = Field(
        "combined",
        description="Whose validation outputs the monitor reads: 'combined', the model's "
        "prediction (mean of the heads' probabilities; for val_loss the mean of their "
        "losses), or one head. The authors' submission 2 kept the best attention head.",
    )
    patience: int | None = Field(
        None, ge=1, description="Stop after N epochs without improvement; None trains all epochs."
    )


class RunConfig(_Section):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    channels_last: bool = Field(True, description="channels_last memory format on CUDA.")
    compile: Literal["none", "default", "reduce-overhead"] = Field(
        "none",
        description="torch.compile the model for the training step: 'default' fuses its "
        "kernels, 'reduce-overhead' also replays each step as CUDA graphs (on CUDA; elsewhere "
        "as 'default'). Evaluation stays eager. The first step pays the compile.",
    )
    deterministic: bool = True
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads; None keeps torch's default (all cores)."
    )
    progress: bool = True


class Config(_Section):
    preset: str = "custom"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _segments_fit_input(self) -> Config:
        m = self.model
        if m.arch == "segments" and m.segments * m.segment_frames != self.data.input_frames:
            raise ValueError(
                f"model.segments * model.segment_frames = {m.segments} * {m.segment_frames} "
                f"must equal data.input_frames={self.data.input_frames}"
            )
        if self.optim.switch_epoch is not None and self.optim.switch_epoch > self.optim.epochs:
            raise ValueError(
                f"optim.switch_epoch={self.optim.switch_epoch} is after optim.epochs="
                f"{self.optim.epochs}; lower it or set it to null to keep Adam"
            )
        head, heads = self.early_stopping.head, self.model.head_names()
        if head != "combined" and head not in heads:
            raise ValueError(
                f"early_stopping.head={head!r} is not a head of this model (its heads: "
                f"{', '.join(heads)}); set early_stopping.head to combined or one of those"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, as logged to MLflow and accepted by :func:`with_overrides`."""
        return flatten(self.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- building


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def valid_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key that an override may set."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _allowed_values(dotted: str) -> str:
    model: type[BaseModel] = Config
    *parents, leaf = dotted.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    field = model.model_fields[leaf]
    ann = field.annotation
    if typing.get_origin(ann) is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(ann))
    bounds = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                bounds.append(f"{sym} {getattr(meta, attr)}")
    type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "")
    return f"a {type_name}" + (f" {' and '.join(bounds)}" if bounds else "")


def _check_key(dotted: str) -> None:
    keys = valid_keys()
    if dotted in keys:
        return
    close = difflib.get_close_matches(dotted, keys, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    section = dotted.split(".")[0]
    siblings = [k for k in keys if k.startswith(section + ".")]
    listing = f" Valid keys under '{section}': {', '.join(siblings)}." if siblings else ""
    raise ConfigError(f"unknown config key '{dotted}'.{hint}{listing}")


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not isinstance(p, int))
        msg = e["msg"].removeprefix("Value error, ")
        if loc and loc in valid_keys():
            got = e.get("input")
            lines.append(f"{loc}={got!r}: {msg} (expected {_allowed_values(loc)})")
        else:
            lines.append(f"{loc + ': ' if loc else ''}{msg}")
    return "invalid config: " + "; ".join(lines)


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side the way YAML would (``8``, ``1e-4``, ``null``)."""
    # YAML 1.1 reads "1e-4" as a string; people write learning rates that way.
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["model.attention.heads=8"]`` -> ``{"model.attention.heads": 8}``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"override '{item}' is not of the form key=value (e.g. optim.lr=1e-3)"
            )
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        _check_key(dotted)
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def build_config(
    preset: str = "quick", overrides: Mapping[str, Any] | Iterable[str] | None = None
) -> Config:
    """Build a validated config from a preset and dotted-key overrides.

    Raises :class:`ConfigError` with a message naming the key and the allowed values.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    tree = _merge(PRESETS[preset](), _nest(overrides))
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def with_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of ``config`` with dotted-key overrides applied and re-validated."""
    tree = _merge(config.to_dict(), _nest(overrides))
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def config_from_dict(tree: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(dict(tree))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None

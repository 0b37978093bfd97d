import numpy as np
import pytest
import torch

from moodtheme.augment import (
    EvalTransform,
    TrainTransform,
    mixup,
    random_resized_crop,
    resize_bilinear,
    resized_crop_box,
    spec_augment,
)
from moodtheme.config import AugmentConfig

OFF = {"wrap_pad_p": 0.0, "resized_crop_p": 0.0, "specaugment_p": 0.0}


def config(**fields) -> AugmentConfig:
    return AugmentConfig(**fields)


def track(frames: int, n_mels: int = 96, seed: int = 0) -> np.ndarray:
    """Distinct values per column, so a window's position can be recovered."""
    rng = np.random.default_rng(seed)
    return (rng.normal(-40, 10, (n_mels, frames)) + np.arange(frames) * 1e-3).astype(np.float32)


@pytest.fixture
def memmap(tmp_path):
    def make(frames: int) -> np.ndarray:
        path = tmp_path / f"{frames}.npy"
        np.save(path, track(frames))
        return np.load(path, mmap_mode="r")

    return make


class RecordingMel:
    """A stand-in for the memory map that records which frames the transform reads."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.frames_read = 0

    def __getitem__(self, key):
        rows, cols = key
        assert rows == slice(None), f"unexpected row index {rows!r}"
        start, stop, step = cols.indices(self.shape[1])
        assert step == 1
        self.frames_read += stop - start
        return self.array[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the transform converted the whole track to an array")


def window_start(out: np.ndarray, mel: np.ndarray) -> int:
    """Where ``out`` (already divided by the scale) sits in ``mel``; fails if it is no window."""
    frames = out.shape[1]
    for start in range(mel.shape[1] - frames + 1):
        if np.allclose(out, mel[:, start : start + frames] / 100, rtol=0, atol=1e-6):
            return start
    raise AssertionError("output is not a window of the track")


# ----------------------------------------------------------------------------- reading


@pytest.mark.parametrize("transform", [TrainTransform, EvalTransform])
@pytest.mark.parametrize("length", [300, 1000])
def test_only_the_crop_is_read(transform, length):
    # Every augmentation on: they work on the crop, never on the rest of the track.
    cfg = config(resized_crop_p=1.0, specaugment_p=1.0)
    for seed in range(5):
        mel = RecordingMel(track(length))
        out = transform(cfg, 256)(mel, np.random.default_rng(seed))
        assert mel.frames_read == 256
        assert out.shape == (96, 256)


@pytest.mark.parametrize("transform", [TrainTransform, EvalTransform])
def test_short_track_is_read_once_and_padded(transform):
    mel = RecordingMel(track(100))
    out = transform(config(), 256)(mel, np.random.default_rng(0))
    assert mel.frames_read == 100 and out.shape == (96, 256)


@pytest.mark.parametrize("transform", [TrainTransform, EvalTransform])
@pytest.mark.parametrize("length", [50, 256, 2000])
def test_shape_dtype_and_layout_from_a_read_only_memmap(memmap, transform, length):
    mel = memmap(length)
    assert not mel.flags.writeable
    cfg = config(resized_crop_p=1.0, specaugment_p=1.0, wrap_pad_p=0.5)
    out = transform(cfg, 256)(mel, np.random.default_rng(1))
    assert out.shape == (96, 256)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous and out.flags.writeable
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(np.asarray(mel), track(length))  # the source is untouched


# ----------------------------------------------------------------------------- train pipeline


def test_train_is_deterministic_given_the_seed(memmap):
    mel = memmap(3000)
    tf = TrainTransform(config(resized_crop_p=0.5, specaugment_p=0.5), 512)
    runs = [[tf(mel, np.random.default_rng(seed)) for seed in range(8)] for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][1])


def test_random_crop_is_a_uniform_window_divided_by_the_scale():
    mel = track(266)
    tf = TrainTransform(config(**OFF), 256)
    starts = {window_start(tf(mel, np.random.default_rng(seed)), mel) for seed in range(300)}
    assert starts == set(range(11))


def test_centre_window_takes_the_centre():
    mel = track(1001)
    tf = TrainTransform(config(**OFF), 256, window="centre")
    outs = [tf(mel, np.random.default_rng(seed)) for seed in range(5)]
    assert {window_start(o, mel) for o in outs} == {(1001 - 256) // 2}
    np.testing.assert_array_equal(outs[0], EvalTransform(config(), 256)(mel))


@pytest.mark.parametrize("mode", ["wrap", "constant"])
def test_padding_centres_the_track_and_fills_by_mode(mode):
    mel = track(50)
    p = 1.0 if mode == "wrap" else 0.0
    tf = TrainTransform(config(**{**OFF, "wrap_pad_p": p}), 120)
    for seed in range(5):
        out = tf(mel, np.random.default_rng(seed)) * np.float32(100)
        left = (120 - 50) // 2
        np.testing.assert_allclose(out[:, left : left + 50], mel, atol=1e-4)
        if mode == "wrap":
            np.testing.assert_allclose(out[:, left + 50 :], mel[:, : 120 - 50 - left], atol=1e-4)
            np.testing.assert_allclose(out[:, :left], mel[:, 50 - left :], atol=1e-4)
        else:
            pad = np.concatenate([out[:, :left], out[:, left + 50 :]], axis=1)
            np.testing.assert_allclose(pad, mel.min(), atol=1e-4)


def test_wrap_probability_mixes_both_paddings():
    mel = track(50)
    tf = TrainTransform(config(**{**OFF, "wrap_pad_p": 0.5}), 120)
    wrapped = [
        not np.allclose(tf(mel, np.random.default_rng(s))[:, 0] * 100, mel.min(), atol=1e-4)
        for s in range(40)
    ]
    assert 5 < sum(wrapped) < 35


def test_resized_crop_on_a_long_input_stretches_the_centre():
    # See resized_crop_box: for 96 x 512, no box fits, so torchvision's fallback applies.
    assert resized_crop_box(96, 512, (0.8, 1.0), (1.7, 2.3), np.random.default_rng(0)) == (
        0, (512 - 221) // 2, 96, 221,
    )  # fmt: skip
    mel = track(512)
    tf = TrainTransform(config(**{**OFF, "resized_crop_p": 1.0}), 512, window="centre")
    out = tf(mel, np.random.default_rng(0))
    centre = torch.from_numpy(mel[:, 145 : 145 + 221].copy())[None, None]
    expected = torch.nn.functional.interpolate(
        centre, size=(96, 512), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(out * 100, expected, atol=1e-3)


def test_resized_crop_box_follows_torchvision_semantics():
    rng = np.random.default_rng(1)
    boxes = [resized_crop_box(96, 200, (0.8, 1.0), (1.7, 2.3), rng) for _ in range(200)]
    for top, left, h, w in boxes:
        assert 0 <= top <= 96 - h and 0 <= left <= 200 - w
        assert 0.78 <= h * w / (96 * 200) <= 1.02
        assert 1.6 <= w / h <= 2.4
    assert len({(top, left) for top, left, _, _ in boxes}) > 20  # random positions, not a fixed box
    # Too narrow an image for the ratios: full width, centred height of width / 3.
    assert resized_crop_box(96, 96, (0.8, 1.0), (3.0, 4.0), rng) == (32, 0, 32, 96)
    # An image already within the ratios and scale 1 keeps everything.
    assert resized_crop_box(96, 192, (1.0, 1.0), (2.0, 2.0), rng) == (0, 0, 96, 192)


def test_random_resized_crop_keeps_the_shape():
    x = track(200)
    out = random_resized_crop(x, (0.8, 1.0), (1.7, 2.3), np.random.default_rng(2))
    assert out.shape == x.shape and out.dtype == np.float32
    assert x.min() - 1e-4 <= out.min() and out.max() <= x.max() + 1e-4  # interpolation only


def test_resize_bilinear_matches_torch():
    x = np.random.default_rng(3).normal(size=(40, 70)).astype(np.float32)
    got = resize_bilinear(x, (96, 300))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(x)[None, None], size=(96, 300), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _masked(x: np.ndarray, fill: float) -> tuple[np.ndarray, np.ndarray]:
    hit = x == fill
    return np.flatnonzero(hit.all(axis=1)), np.flatnonzero(hit.all(axis=0))


@pytest.mark.parametrize("max_masks", [1, 2])
def test_spec_augment_mask_sizes_and_fill(max_masks):
    sizes = []
    for seed in range(60):
        x = track(400) + 50
        x[5, 7] = -100.0  # the minimum
        rows, cols = _masked(
            spec_augment(x, max_masks, 0.15, 0.2, np.random.default_rng(seed)), -100
        )
        assert len(rows) <= max_masks * int(0.15 * 96)
        assert len(cols) <= max_masks * int(0.2 * 400)
        if max_masks == 1 and len(rows):
            assert np.all(np.diff(rows) == 1)  # one contiguous band
        sizes.append((len(rows), len(cols)))
    rows, cols = np.array(sizes).T
    assert rows.max() >= 10 and cols.max() >= 60  # sizes reach towards the limits
    assert (cols > 0).mean() > 0.9


def test_specaugment_in_the_pipeline_fills_with_the_crop_minimum():
    mel = track(300)
    on = TrainTransform(config(**{**OFF, "specaugment_p": 1.0}), 256, window="centre")
    out = on(mel, np.random.default_rng(0))
    window = mel[:, 22:278] / np.float32(100)
    rows, cols = _masked(out, window.min())
    assert len(rows) + len(cols) > 0
    keep = np.ones_like(out, bool)
    keep[rows] = False
    keep[:, cols] = False
    np.testing.assert_array_equal(out[keep], window[keep])


def test_each_toggle_disables_its_component():
    mel = track(700)
    everything = {"wrap_pad_p": 1.0, "resized_crop_p": 1.0, "specaugment_p": 1.0}

    def outputs(window="random", **fields):
        tf = TrainTransform(config(**{**everything, **fields}), 256, window)
        return [tf(mel, np.random.default_rng(s)) for s in range(10)]

    def has_masks(x):
        rows, cols = _masked(x, x.min())
        return len(rows) + len(cols) > 0

    # SpecAugment on vs off.
    assert sum(has_masks(o) for o in outputs()) >= 8
    assert not any(has_masks(o) for o in outputs(specaugment_p=0.0))
    # Resized crop off (and SpecAugment off): every output is a plain window.
    for o in outputs(specaugment_p=0.0, resized_crop_p=0.0):
        window_start(o, mel)
    with pytest.raises(AssertionError, match="not a window"):
        window_start(outputs(specaugment_p=0.0)[0], mel)
    # The centre window instead of a random one: the same window for every seed.
    centre = outputs("centre", specaugment_p=0.0, resized_crop_p=0.0)
    assert {window_start(o, mel) for o in centre} == {(700 - 256) // 2}


def test_scale_divides_the_output():
    mel = track(256)
    a = EvalTransform(config(scale=100.0), 256)(mel)
    b = EvalTransform(config(scale=1.0), 256)(mel)
    np.testing.assert_allclose(a * 100, b, rtol=1e-6)
    np.testing.assert_array_equal(b, mel)


# ----------------------------------------------------------------------------- eval pipeline


def test_eval_is_deterministic_and_centred():
    mel = track(1000)
    tf = EvalTransform(config(), 300)
    outs = [tf(mel, np.random.default_rng(s)) for s in range(3)] + [tf(mel)]
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_allclose(outs[0] * 100, mel[:, 350:650], atol=1e-4)


def test_eval_pads_with_the_minimum_centred():
    mel = track(30)
    out = EvalTransform(config(wrap_pad_p=1.0), 64)(mel, np.random.default_rng(0)) * 100
    np.testing.assert_allclose(out[:, 17:47], mel, atol=1e-4)
    np.testing.assert_allclose(out[:, :17], mel.min(), atol=1e-4)
    np.testing.assert_allclose(out[:, 47:], mel.min(), atol=1e-4)


@pytest.mark.parametrize("transform", ["train", "eval"])
def test_first_window_reads_the_first_frames_of_a_long_track(transform):
    mel = RecordingMel(track(5000))
    tf = (TrainTransform(config(**OFF), 4096, "first") if transform == "train" else
          EvalTransform(config(), 4096, "first"))  # fmt: skip
    out = tf(mel, np.random.default_rng(3))
    np.testing.assert_allclose(out * 100, mel.array[:, :4096], atol=1e-4)
    assert mel.frames_read == 4096


@pytest.mark.parametrize("transform", ["train", "eval"])
def test_first_window_tiles_a_short_track_from_its_start(transform):
    # The authors' get_spectogram: whole copies of the track, then its first frames.
    mel = track(300)
    tf = (TrainTransform(config(**OFF), 1000, "first") if transform == "train" else
          EvalTransform(config(), 1000, "first"))  # fmt: skip
    out = tf(mel, np.random.default_rng(0)) * 100
    expected = np.concatenate([mel, mel, mel, mel[:, :100]], axis=1)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_first_window_is_the_same_for_every_seed_but_augmentation_still_draws():
    mel = track(5000)
    plain = TrainTransform(config(**OFF), 512, "first")
    assert len({plain(mel, np.random.default_rng(s)).tobytes() for s in range(5)}) == 1
    augmented = TrainTransform(config(**{**OFF, "specaugment_p": 1.0}), 512, "first")
    assert len({augmented(mel, np.random.default_rng(s)).tobytes() for s in range(5)}) == 5


# ----------------------------------------------------------------------------- mixup


def test_mixup_mixes_inputs_and_labels_with_the_same_partner_and_lambda():
    n = 16
    x = torch.randn(n, 1, 4, 6)
    y = torch.eye(n)  # one-hot rows reveal each example's partner and lambda
    mx, my = mixup(x, y, 1.0, torch.Generator().manual_seed(0))
    assert mx.shape == x.shape and my.shape == y.shape
    partners = []
    for i in range(n):
        lam = my[i, i].item()
        others = [j for j in range(n) if j != i and my[i, j] > 0]
        partner = others[0] if others else i
        assert len(others) <= 1 and 0.0 <= lam <= 1.0
        if others:
            assert my[i, partner].item() == pytest.approx(1 - lam, abs=1e-6)
        torch.testing.assert_close(mx[i], lam * x[i] + (1 - lam) * x[partner], rtol=0, atol=1e-5)
        partners.append(partner)
    assert sorted(partners) == list(range(n))  # a permutation
    lams = torch.diagonal(my)
    assert lams.std() > 0.05  # one lambda per example


def test_mixup_is_reproducible_from_the_generator():
    x, y = torch.randn(8, 1, 2, 3), torch.rand(8, 5)
    a = mixup(x, y, 0.4, torch.Generator().manual_seed(7))
    b = mixup(x, y, 0.4, torch.Generator().manual_seed(7))
    c = mixup(x, y, 0.4, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[0], c[0])


def test_mixup_alpha_zero_is_the_identity():
    x, y = torch.randn(4, 1, 2, 3), torch.rand(4, 5)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    mx, my = mixup(x, y, 0.0, gen)
    assert mx is x and my is y
    assert torch.equal(gen.get_state(), state)  # draws nothing


def test_mixup_accepts_integer_labels():
    x, y = torch.randn(6, 1, 2, 2), torch.randint(0, 2, (6, 3))
    _, my = mixup(x, y, 1.0, torch.Generator().manual_seed(0))
    assert my.dtype == x.dtype and ((my >= 0) & (my <= 1)).all()


def test_mixup_with_a_partner_batch_mixes_position_by_position():
    n = 8
    x, y = torch.randn(n, 1, 4, 6), torch.eye(n)
    px, py = torch.randn(n, 1, 4, 6), torch.eye(n).flip(0)
    mx, my = mixup(x, y, 1.0, torch.Generator().manual_seed(3), partner=(px, py))
    lam = my[torch.arange(n), torch.arange(n)]  # own label's weight
    np.testing.assert_allclose(my[torch.arange(n), torch.arange(n).flip(0)], 1 - lam, atol=1e-6)
    expected = lam.view(n, 1, 1, 1) * x + (1 - lam.view(n, 1, 1, 1)) * px
    np.testing.assert_allclose(mx, expected, atol=1e-6)
    # The same generator gives the same lambdas whichever partner is used.
    _, own = mixup(x, y, 1.0, torch.Generator().manual_seed(3))
    mixed_with_another = (own > 0).sum(dim=1) == 2
    assert mixed_with_another.sum() >= n // 2
    diagonal = own[torch.arange(n), torch.arange(n)]
    np.testing.assert_allclose(diagonal[mixed_with_another], lam[mixed_with_another], atol=1e-6)


def test_mixup_refuses_a_partner_of_another_shape():
    x, y = torch.randn(4, 1, 4, 6), torch.zeros(4, 3)
    with pytest.raises(ValueError, match="does not match"):
        mixup(x, y, 1.0, torch.Generator(), partner=(torch.randn(3, 1, 4, 6), torch.zeros(3, 3)))

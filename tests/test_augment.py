"""libml.augment: presets, per-image randomness, exact identities, graph modes."""
import numpy as np
import pytest
import tensorflow as tf

from libml import augment, names
from libml.utils import UserError

SEED = tf.constant([3, 4], tf.int32)
SHAPES = [(8, 8, 1), (32, 32, 3), (96, 96, 3)]


def random_images(n, shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n,) + shape).astype(np.uint8)


def reflect_crops(image, pad_h, pad_w):
    """Every result of reflect-padding `image` and cropping it back: {(dy, dx): crop}."""
    h, w = image.shape[:2]
    padded = np.pad(image, [(pad_h, pad_h), (pad_w, pad_w), (0, 0)], mode='reflect')
    return {(dy, dx): padded[dy:dy + h, dx:dx + w]
            for dy in range(2 * pad_h + 1) for dx in range(2 * pad_w + 1)}


def matches_any(out, candidates):
    return any(np.array_equal(out, c) for c in candidates)


def test_check_preset():
    for name in names.PRESETS:
        assert names.check_preset(name) == name
    assert names.check_preset('stl-10') == 'stl10'
    with pytest.raises(UserError) as e:
        names.check_preset('autoaugment', flag='--augment')
    message = str(e.value)
    assert '--augment' in message and 'autoaugment' in message
    for name in names.PRESETS:
        assert name in message


def test_default_pad():
    assert [augment.default_pad(s) for s in (8, 12, 32, 96, 2)] == [1, 2, 4, 12, 1]


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('dtype', ['uint8', 'float32'])
def test_shape_dtype_range(shape, dtype):
    images = random_images(16, shape).astype(dtype)
    for preset in names.PRESETS + ('stl-10',):
        out = augment.augment(images, preset, SEED)
        assert out.shape == images.shape, preset
        assert out.dtype == tf.as_dtype(dtype), preset
        values = out.numpy()
        assert values.min() >= 0 and values.max() <= 255, preset
        if preset != 'none':  # pixels move or change
            assert not np.array_equal(values, images), preset


def test_single_image_and_int64_seed():
    image = random_images(1, (32, 32, 3))[0]
    out = augment.augment(image, 'cifar10', tf.constant([1, 2], tf.int64))
    assert out.shape == image.shape and out.dtype == tf.uint8


def test_float_input_gives_the_same_pixels_as_uint8():
    images = random_images(8, (16, 16, 3))
    for preset in ('cifar10', 'svhn', 'stl10', 'cutout'):
        as_uint8 = augment.augment(images, preset, SEED).numpy()
        as_float = augment.augment(images.astype(np.float32), preset, SEED).numpy()
        np.testing.assert_array_equal(as_float, as_uint8.astype(np.float32), err_msg=preset)
    color = augment.augment(images.astype(np.float32), 'color', SEED).numpy()
    np.testing.assert_allclose(color, augment.augment(images, 'color', SEED).numpy(), atol=0.51)


@pytest.mark.parametrize('preset', [p for p in names.PRESETS if p != 'none'])
def test_identical_images_get_different_augmentations(preset):
    image = random_images(1, (32, 32, 3))[0]
    out = augment.augment(np.stack([image] * 32), preset, SEED).numpy()
    distinct = {o.tobytes() for o in out}
    assert len(distinct) > 4, f'{preset}: {len(distinct)} distinct outputs of 32'


@pytest.mark.parametrize('preset', [p for p in names.PRESETS if p != 'none'])
def test_determinism(preset):
    images = random_images(16, (32, 32, 3))
    a = augment.augment(images, preset, SEED).numpy()
    b = augment.augment(images, preset, tf.constant([3, 4])).numpy()
    c = augment.augment(images, preset, tf.constant([3, 5])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_identity_parts_are_exact():
    for dtype in (np.uint8, np.float32):
        images = random_images(8, (32, 32, 3)).astype(dtype)
        np.testing.assert_array_equal(augment.shift(images, 0, SEED).numpy(), images)
        np.testing.assert_array_equal(augment.shift(images, (0, 0), SEED).numpy(), images)
        np.testing.assert_array_equal(augment.shift(images, tf.constant(0), SEED).numpy(), images)
        np.testing.assert_array_equal(augment.cutout(images, SEED, p=0).numpy(), images)
        np.testing.assert_array_equal(augment.cutout(images, SEED, p=tf.constant(0.)).numpy(),
                                      images)
        np.testing.assert_array_equal(augment.augment(images, 'none', SEED).numpy(), images)
    images = random_images(8, (32, 32, 3))
    same = augment.color(images, SEED, brightness=0., hue=0., saturation=(1., 1.),
                         contrast=(1., 1.)).numpy()
    assert np.abs(same.astype(int) - images).max() <= 1


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_shift_is_a_reflect_pad_and_crop(shape):
    images = random_images(12, shape)
    pad = augment.default_pad(shape[0])
    out = augment.shift(images, None, SEED).numpy()
    offsets = set()
    for image, o in zip(images, out):
        crops = reflect_crops(image, pad, pad)
        found = [k for k, c in crops.items() if np.array_equal(o, c)]
        assert found, 'not a reflect-pad-and-crop'
        offsets.add(found[0])
    assert len(offsets) > 3  # each image its own offset


def test_shift_non_square_and_explicit_pad():
    images = random_images(8, (16, 24, 3))
    out = augment.shift(images, (2, 3), SEED).numpy()
    for image, o in zip(images, out):
        assert matches_any(o, reflect_crops(image, 2, 3).values())


def test_mirror():
    images = random_images(32, (8, 8, 3))
    out = augment.mirror(images, SEED).numpy()
    flipped = [np.array_equal(o, i[:, ::-1]) for i, o in zip(images, out)]
    kept = [np.array_equal(o, i) for i, o in zip(images, out)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 < sum(flipped) < 28


@pytest.mark.parametrize('preset,mirrored', [('cifar10', True), ('stl10', True), ('svhn', False)])
def test_geometric_presets(preset, mirrored):
    images = random_images(16, (32, 32, 3))
    out = augment.augment(images, preset, SEED).numpy()
    flips = 0
    for image, o in zip(images, out):
        if matches_any(o, reflect_crops(image, 4, 4).values()):
            continue
        assert mirrored and matches_any(o, reflect_crops(image[:, ::-1], 4, 4).values()), preset
        flips += 1
    assert (flips > 0) == mirrored


def test_cutout_rectangles():
    images = np.full((64, 32, 32, 3), 128, np.uint8)
    out = augment.cutout(images, SEED, p=1.).numpy()
    boxes = set()
    for o in out:
        changed = np.any(o != 128, axis=-1)
        ys, xs = np.nonzero(changed)
        assert len(ys), 'p=1: every image gets a rectangle'
        box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        area = (box[1] - box[0]) * (box[3] - box[2])
        assert area <= 0.4 * 32 * 32
        assert changed.sum() >= 0.9 * area  # filled with noise (a few noise values may be 128)
        boxes.add(box)
    assert len(boxes) > 50  # rectangles differ from image to image
    noise = out[out != 128]
    assert noise.min() < 20 and noise.max() > 235  # uniform noise over [0, 255]


def test_cutout_probability_and_constant_fill():
    images = np.full((400, 16, 16, 3), 128, np.uint8)
    changed = np.any(augment.cutout(images, SEED).numpy() != 128, axis=(1, 2, 3))
    assert 0.2 < changed.mean() < 0.4  # p = 0.3 per image
    out = augment.cutout(images[:16], SEED, p=1., pixel_level=False).numpy()
    for o in out:
        values = o[np.any(o != 128, axis=-1)]
        assert len(values) == 0 or len(np.unique(values)) == 1


def test_color_changes_colours_and_handles_grey():
    images = random_images(16, (16, 16, 3))
    out = augment.color(images, SEED).numpy()
    assert not np.array_equal(out, images)
    grey = random_images(16, (8, 8, 1))
    out = augment.augment(grey, 'color', SEED).numpy()
    assert out.shape == grey.shape and not np.array_equal(out, grey)


def test_hue_saturation_matches_tf_image():
    rng = np.random.RandomState(1)
    x = rng.rand(6, 8, 8, 3).astype(np.float32)
    dh = rng.uniform(-0.5, 0.5, 6).astype(np.float32)
    fs = rng.uniform(0.1, 3, 6).astype(np.float32)
    mine = augment._hue_saturation(tf.constant(x), tf.constant(dh), tf.constant(fs)).numpy()
    ref = np.stack([tf.image.adjust_saturation(tf.image.adjust_hue(x[i], dh[i]), fs[i]).numpy()
                    for i in range(6)])
    np.testing.assert_allclose(mine, ref, atol=1e-5)


def test_tf_function_and_tf_data_match_eager():
    images = random_images(16, (32, 32, 3))
    pngs = [tf.io.encode_png(i).numpy() for i in images]

    @tf.function
    def in_function(x, seed, preset):
        return augment.augment(x, preset, seed)

    for preset in names.PRESETS:
        eager = augment.augment(images, preset, SEED).numpy()
        traced = in_function(tf.constant(images), SEED, preset).numpy()
        # tf.data: unknown static shape (decode_png without channels), graph mode, batches of 8
        ds = tf.data.Dataset.from_tensor_slices(pngs).map(tf.io.decode_png).batch(8).enumerate()
        ds = ds.map(lambda i, x, preset=preset: augment.augment(
            x, preset, tf.random.experimental.stateless_fold_in(SEED, i)))
        batches = list(ds.as_numpy_iterator())
        assert [b.shape for b in batches] == [(8, 32, 32, 3)] * 2
        again = list(ds.as_numpy_iterator())
        if preset == 'color':
            np.testing.assert_allclose(traced, eager, atol=1)
        else:
            np.testing.assert_array_equal(traced, eager)
        for a, b in zip(batches, again):
            np.testing.assert_array_equal(a, b)  # reproducible
        if preset != 'none':
            assert not np.array_equal(batches[0], batches[1])  # each batch its own seed
            assert not np.array_equal(np.concatenate(batches), images)

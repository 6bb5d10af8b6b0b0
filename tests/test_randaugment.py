"""libml.randaugment: RandAugment ops (exact identities, PIL agreement, range), FixMatch's strong
view (graph modes, seeds), grey images."""
import numpy as np
import pytest
import tensorflow as tf
from test_augment import SEED, SHAPES, matches_any, random_images  # the augmentation tests' helpers

from libml import randaugment

# Each op's magnitude that leaves any image unchanged.
IDENTITY_MAGNITUDE = {'identity': 0., 'rotate': 0., 'solarize': 256., 'posterize': 8.,
                      'contrast': 1., 'brightness': 1., 'sharpness': 1., 'shear_x': 0.,
                      'shear_y': 0., 'translate_x': 0., 'translate_y': 0., 'color': 1.}


@pytest.mark.parametrize('shape', [(8, 8, 1), (12, 16, 3)], ids=lambda s: 'x'.join(map(str, s)))
def test_randaugment_ops_identity_magnitudes_are_exact(shape):
    images = random_images(6, shape).astype(np.float32)
    for name, magnitude in IDENTITY_MAGNITUDE.items():
        op, _ = randaugment.RANDAUGMENT[name]
        out = op(tf.constant(images), tf.fill([6], magnitude)).numpy()
        np.testing.assert_array_equal(out, images, err_msg=name)
    # autocontrast: images that already span [0, 255] in every channel; equalize: images whose
    # values are each present once (a flat histogram).
    spanning = images.copy()
    spanning[:, 0, 0], spanning[:, 0, 1] = 0, 255
    op, _ = randaugment.RANDAUGMENT['autocontrast']
    np.testing.assert_array_equal(op(tf.constant(spanning), None).numpy(), spanning)
    flat = np.stack([np.random.RandomState(i).permutation(256).reshape(16, 16, 1)
                     for i in range(3)]).astype(np.float32)
    op, _ = randaugment.RANDAUGMENT['equalize']
    np.testing.assert_array_equal(op(tf.constant(flat), None).numpy(), flat)


@pytest.mark.parametrize('name', ['autocontrast', 'equalize', 'solarize', 'posterize', 'color',
                                  'contrast', 'brightness', 'sharpness'])
def test_randaugment_pixel_ops_match_pil(name):
    """The point and filter ops against PIL's (the FixMatch paper's implementation), within the
    rounding PIL does in 8 bits."""
    from PIL import Image, ImageEnhance, ImageOps
    images = random_images(4, (16, 16, 3), seed=2) // 2 + 40   # not spanning [0, 255]
    magnitude = {'solarize': 128., 'posterize': 5., 'color': 1.6, 'contrast': 0.4,
                 'brightness': 1.3, 'sharpness': 0.2}.get(name, 0.)
    reference = {
        'autocontrast': ImageOps.autocontrast, 'equalize': ImageOps.equalize,
        'solarize': lambda i: ImageOps.solarize(i, int(magnitude)),
        'posterize': lambda i: ImageOps.posterize(i, int(magnitude)),
        'color': lambda i: ImageEnhance.Color(i).enhance(magnitude),
        'contrast': lambda i: ImageEnhance.Contrast(i).enhance(magnitude),
        'brightness': lambda i: ImageEnhance.Brightness(i).enhance(magnitude),
        'sharpness': lambda i: ImageEnhance.Sharpness(i).enhance(magnitude)}[name]
    op, _ = randaugment.RANDAUGMENT[name]
    out = op(tf.constant(images, tf.float32), tf.fill([4], magnitude)).numpy()
    for o, image in zip(out, images):
        ref = np.asarray(reference(Image.fromarray(image))).astype(np.float32)
        assert np.abs(np.round(o) - ref).max() <= 1, name


def test_randaugment_geometry():
    image = random_images(1, (8, 8, 3)).astype(np.float32)
    rotate, _ = randaugment.RANDAUGMENT['rotate']
    quarter = rotate(tf.constant(image), tf.constant([90.])).numpy()[0]
    # A quarter turn about the centre moves every pixel; clockwise and anticlockwise differ.
    assert matches_any(quarter, [np.rot90(image[0], 1), np.rot90(image[0], -1)])
    translate, _ = randaugment.RANDAUGMENT['translate_x']
    moved = translate(tf.constant(image), tf.constant([0.25])).numpy()[0]   # 2 of 8 pixels
    np.testing.assert_array_equal(moved[:, 2:], image[0, :, :-2])
    np.testing.assert_array_equal(moved[:, :2], 0)   # uncovered pixels are black


@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s)))
@pytest.mark.parametrize('dtype', ['uint8', 'float32'])
def test_randaugment_and_strong_shape_range_and_variety(shape, dtype):
    images = np.stack([random_images(1, shape)[0]] * 24).astype(dtype)   # one image, 24 times
    for fn in (lambda x: randaugment.randaugment(x, SEED),
               lambda x: randaugment.strong(x, 'svhn', SEED)):
        out = fn(images)
        assert out.shape == images.shape and out.dtype == tf.as_dtype(dtype)
        values = out.numpy()
        assert values.min() >= 0 and values.max() <= 255
        assert len({v.tobytes() for v in values}) > 12   # each image its own ops and magnitudes


def test_randaugment_each_op_keeps_pixels_in_range():
    images = random_images(8, (16, 16, 3)).astype(np.float32)
    for name, (op, to_magnitude) in randaugment.RANDAUGMENT.items():
        for level in (0., 0.3, 1.):
            out = op(tf.constant(images), to_magnitude(tf.fill([8], level))).numpy()
            assert out.shape == images.shape and out.min() >= 0 and out.max() <= 255, name


def test_strong_view_graph_modes_and_seeds():
    images = random_images(8, (16, 16, 3))
    eager = randaugment.strong(images, 'cifar10', SEED).numpy()
    traced = tf.function(lambda x, s: randaugment.strong(x, 'cifar10', s))(images, SEED).numpy()
    np.testing.assert_array_equal(traced, eager)
    # Unknown channels (decode_png without `channels`): decided when the graph runs.
    pngs = tf.data.Dataset.from_tensor_slices([tf.io.encode_png(i).numpy() for i in images])
    ds = pngs.map(tf.io.decode_png).batch(8).map(lambda x: randaugment.randaugment(x, SEED))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), randaugment.randaugment(images, SEED))
    assert not np.array_equal(randaugment.strong(images, 'cifar10', tf.constant([3, 5])).numpy(), eager)


def test_grey_images_never_draw_color():
    assert randaugment.RANDAUGMENT_OP_NAMES[-1] == 'color'
    count = len(randaugment.RANDAUGMENT)
    for channels, drawn in ((1, set(range(count - 1))), (3, set(range(count)))):
        which, levels = randaugment.randaugment_draws(500, channels, SEED)
        assert which.shape == levels.shape == (2, 500)
        assert set(which.numpy().ravel()) == drawn   # every applicable op, uniformly
        assert not np.array_equal(which[0], which[1])   # two ops per image, drawn independently
        assert 0 <= levels.numpy().min() and levels.numpy().max() < 1

"""RandAugment (Cubuk et al. 2019) as FixMatch uses it for its strong view (Sohn et al. 2020):
every image gets RANDAUGMENT_OPS operations, each drawn uniformly (with replacement) from
RANDAUGMENT_OP_NAMES with its own magnitude drawn uniformly from the op's range. Each op is a
batched tensor function of float32 images [N, H, W, C] in [0, 255] and per-image magnitudes
[N] (N may be 0), so the ops of a batch run once each, on the images that drew them.

The strong view of FixMatch is `strong(images, preset, seed)`: the weak preset, RandAugment,
then cutout. Images and seeds as in `libml.augment` (batched, stateless, uint8 or float32 in
[0, 255], C = 1 or 3); the batching and seeding helpers are augment's, shared on purpose.
"""
import tensorflow as tf

from libml.augment import _batched, _dims, _seeds, _uniform, augment, cutout

RANDAUGMENT_OPS = 2
# Magnitude ranges, as a level u ~ U[0, 1] maps to them (one u per image and op). Enhancement
# factors span both sides of the identity 1, as FixMatch's code draws them (0.1 + 1.9u there).
FACTOR = (0.05, 1.95)      # color, contrast, brightness, sharpness: 1 = unchanged
ROTATE_DEGREES = 30.       # rotate by U[-30, 30] degrees
SHEAR = 0.3                # shear by U[-0.3, 0.3]
TRANSLATE = 0.3            # translate by U[-0.3, 0.3] of the image side
POSTERIZE_BITS = (4, 8)    # keep 4..8 bits: 8 = unchanged
SOLARIZE_MAX = 256.        # invert the pixels >= a threshold in U[0, 256]: 256 = unchanged
# Geometric ops fill uncovered pixels with black, as PIL's transforms (FixMatch's) do.
GEOMETRIC_FILL = 0.
# The cutout after RandAugment: a square of area up to a quarter of the image (side up to half),
# filled with one random grey level.
STRONG_CUTOUT_AREA = (0., 0.25)


def _per_image(v):
    return tf.reshape(v, [-1, 1, 1, 1])


def _blend(degenerate, x, factor):
    """degenerate + factor * (x - degenerate), clipped: PIL's ImageEnhance (factor 1: x)."""
    return tf.clip_by_value(degenerate + _per_image(factor) * (x - degenerate), 0., 255.)


def _grey(x):
    """The luma of RGB images (ITU-R 601, as PIL's 'L'), or grey images themselves; [N, H, W, 1]."""
    luma = lambda: tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
    if x.shape[-1] is None:  # e.g. decode_png without `channels`: decided when the graph runs
        return tf.cond(tf.shape(x)[-1] == 1, lambda: x[..., :1], luma)
    return x if x.shape[-1] == 1 else luma()


def ra_identity(x, _):
    return x


def ra_autocontrast(x, _):
    """Stretches each channel of each image to [0, 255] (constant channels are left as they are)."""
    lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
    scale = tf.math.divide_no_nan(255., hi - lo)
    return tf.where(hi > lo, (x - lo) * scale, x)


def ra_equalize(x, _):
    """Histogram equalization of each channel of each image, PIL's rule: step = (pixels - count of
    the highest value) // 255; value v -> (pixels below v + step // 2) // step (step 0: unchanged)."""
    n, h, w, c = tf.unstack(tf.shape(x))
    values = tf.cast(tf.round(tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [n * c, h * w])), tf.int32)
    rows = tf.range(n * c)[:, None]
    hist = tf.math.unsorted_segment_sum(tf.ones_like(values), rows * 256 + values, n * c * 256)
    hist = tf.reshape(hist, [n * c, 256])
    top = 255 - tf.argmax(tf.reverse(tf.cast(hist > 0, tf.int32), [1]), axis=1, output_type=tf.int32)
    step = (h * w - tf.gather(hist, top, batch_dims=1)) // 255
    below = tf.cumsum(hist, axis=1, exclusive=True)
    lut = tf.minimum((below + step[:, None] // 2) // tf.maximum(step[:, None], 1), 255)
    out = tf.where(step[:, None] > 0, tf.gather(lut, values, batch_dims=1), values)
    return tf.transpose(tf.reshape(tf.cast(out, x.dtype), [n, c, h, w]), [0, 2, 3, 1])


def ra_solarize(x, threshold):
    """Inverts the pixels >= threshold (per image; 256: none)."""
    return tf.where(x >= _per_image(threshold), 255. - x, x)


def ra_posterize(x, bits):
    """Keeps the `bits` (per image, 1..8) high bits of each pixel value."""
    step = _per_image(tf.pow(2., 8. - tf.round(bits)))
    return tf.floor(tf.round(x) / step) * step


def ra_color(x, factor):
    """Saturation: blends each image with its grey version (grey images: unchanged)."""
    return _blend(_grey(x), x, factor)


def ra_contrast(x, factor):
    """Blends each image with the mean grey level of the image."""
    return _blend(tf.reduce_mean(_grey(x), axis=[1, 2, 3], keepdims=True), x, factor)


def ra_brightness(x, factor):
    """Blends each image with black."""
    return _blend(tf.zeros_like(x), x, factor)


def ra_sharpness(x, factor):
    """Blends each image with its smoothed version (PIL's 3x3 SMOOTH kernel; borders kept)."""
    n, h, w, c = tf.unstack(tf.shape(x))
    kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]])[:, :, None, None] / 13.
    # Every channel smoothed alike: channels as images of one channel.
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([n * c, h, w, 1]))
    smooth = tf.nn.conv2d(planes, kernel, 1, 'SAME')
    smooth = tf.transpose(tf.reshape(smooth, tf.stack([n, c, h, w])), [0, 2, 3, 1])
    inner_y = (tf.range(h) > 0) & (tf.range(h) < h - 1)
    inner_x = (tf.range(w) > 0) & (tf.range(w) < w - 1)
    inner = (inner_y[:, None] & inner_x[None, :])[None, :, :, None]
    return _blend(tf.where(inner, smooth, x), x, factor)


def _affine(x, rows):
    """Applies per-image affine maps about the image centre: rows [N, 6] = (a, b, c, d, e, f)
    maps output pixel (px, py) (relative to the centre) to input (a px + b py + c, d px + e py + f)."""
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a, b, c, d, e, f = tf.unstack(rows, axis=1)
    # Output (X, Y) in pixels: input = M (X - cx, Y - cy) + (c + cx, f + cy).
    transforms = tf.stack([a, b, c + cx - a * cx - b * cy,
                           d, e, f + cy - d * cx - e * cy,
                           tf.zeros_like(a), tf.zeros_like(a)], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3],
        fill_value=GEOMETRIC_FILL, interpolation='NEAREST', fill_mode='CONSTANT')


def ra_rotate(x, degrees):
    t = degrees * (3.141592653589793 / 180.)
    cos, sin, zero = tf.cos(t), tf.sin(t), tf.zeros_like(t)
    return _affine(x, tf.stack([cos, -sin, zero, sin, cos, zero], axis=1))


def ra_shear_x(x, shear):
    one, zero = tf.ones_like(shear), tf.zeros_like(shear)
    return _affine(x, tf.stack([one, shear, zero, zero, one, zero], axis=1))


def ra_shear_y(x, shear):
    one, zero = tf.ones_like(shear), tf.zeros_like(shear)
    return _affine(x, tf.stack([one, zero, zero, shear, one, zero], axis=1))


def ra_translate_x(x, fraction):
    """Moves each image by `fraction` of its width (rounded to whole pixels)."""
    one, zero = tf.ones_like(fraction), tf.zeros_like(fraction)
    dx = tf.round(fraction * tf.cast(tf.shape(x)[2], tf.float32))
    return _affine(x, tf.stack([one, zero, -dx, zero, one, zero], axis=1))


def ra_translate_y(x, fraction):
    one, zero = tf.ones_like(fraction), tf.zeros_like(fraction)
    dy = tf.round(fraction * tf.cast(tf.shape(x)[1], tf.float32))
    return _affine(x, tf.stack([one, zero, zero, zero, one, -dy], axis=1))


def _span(lo, hi):
    return lambda u: lo + (hi - lo) * u


# name: (op, level u in [0, 1] -> magnitude). The paper's list; `color` last: grey images skip it.
RANDAUGMENT = {
    'identity': (ra_identity, lambda u: u),
    'autocontrast': (ra_autocontrast, lambda u: u),
    'equalize': (ra_equalize, lambda u: u),
    'rotate': (ra_rotate, _span(-ROTATE_DEGREES, ROTATE_DEGREES)),
    'solarize': (ra_solarize, _span(0., SOLARIZE_MAX)),
    'posterize': (ra_posterize, lambda u: tf.floor(_span(POSTERIZE_BITS[0], POSTERIZE_BITS[1] + 1)(u))),
    'contrast': (ra_contrast, _span(*FACTOR)),
    'brightness': (ra_brightness, _span(*FACTOR)),
    'sharpness': (ra_sharpness, _span(*FACTOR)),
    'shear_x': (ra_shear_x, _span(-SHEAR, SHEAR)),
    'shear_y': (ra_shear_y, _span(-SHEAR, SHEAR)),
    'translate_x': (ra_translate_x, _span(-TRANSLATE, TRANSLATE)),
    'translate_y': (ra_translate_y, _span(-TRANSLATE, TRANSLATE)),
    'color': (ra_color, _span(*FACTOR)),
}
RANDAUGMENT_OP_NAMES = tuple(RANDAUGMENT)


def randaugment_draws(b, channels, seed, ops=RANDAUGMENT_OPS):
    """The random choices of `randaugment` for b images: (op indices into RANDAUGMENT, levels
    u ~ U[0, 1]), each [ops, b]. Grey images (channels 1, a Python int or a scalar tensor) draw
    among all ops but the last, `color`."""
    count = len(RANDAUGMENT)
    choices = tf.cast(tf.where(tf.equal(channels, 3), count, count - 1), tf.float32)
    seeds = _seeds(seed, 2 * ops)
    which = [tf.minimum(tf.cast(_uniform([b], s) * choices, tf.int32), count - 1)
             for s in seeds[:ops]]
    return tf.stack(which), tf.stack([_uniform([b], s) for s in seeds[ops:]])


@_batched
def randaugment(images, seed, ops=RANDAUGMENT_OPS):
    """RandAugment: `ops` operations per image, each op and its magnitude drawn per image (see
    RANDAUGMENT); grey images (C=1) never draw `color`. Same shape and dtype, pixels in range."""
    dtype, shape = images.dtype, images.shape
    x = tf.cast(images, tf.float32)
    b = _dims(x)[0]
    channels = shape[-1] if shape[-1] is not None else tf.shape(x)[3]
    which, levels = randaugment_draws(b, channels, seed, ops)
    indices = tf.range(b)
    count = len(RANDAUGMENT)
    for i in range(ops):
        # Each op runs once, on the images that drew it.
        parts = tf.dynamic_partition(x, which[i], count)
        level = tf.dynamic_partition(levels[i], which[i], count)
        done = [op(part, to_magnitude(lv)) for (op, to_magnitude), part, lv
                in zip(RANDAUGMENT.values(), parts, level)]
        x = tf.dynamic_stitch(tf.dynamic_partition(indices, which[i], count), done)
    x = tf.ensure_shape(tf.reshape(x, tf.shape(images)), shape)
    if dtype == tf.uint8:
        return tf.cast(tf.round(tf.clip_by_value(x, 0., 255.)), tf.uint8)
    return tf.cast(x, dtype)


@_batched
def strong(images, preset, seed):
    """FixMatch's strong view: the `preset` (the weak view), then RandAugment, then cutout of a
    square (area up to a quarter of the image, one random grey level). Same shape and dtype."""
    s_weak, s_rand, s_cutout = _seeds(seed, 3)
    x = randaugment(augment(images, preset, s_weak), s_rand)
    return cutout(x, s_cutout, p=1., area=STRONG_CUTOUT_AREA, aspect=(1., 1.), pixel_level=False)

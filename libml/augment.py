"""Image augmentations: the `--augment` presets, batched, random per image, stateless.

    images = augment(images, 'cifar10', seed)

`images` is a batch [B, H, W, C] (a single image [H, W, C] is accepted too), uint8 or float32 with
pixel values in [0, 255], any height and width, C = 1 or 3. `seed` is an int32/int64 tensor of
shape [2]. The result has the same shape and dtype, pixels in range.

Presets (`PRESETS`; `stl-10` is accepted for `stl10`, as the original README spells it):
  cifar10  mirror + shift
  svhn     shift only (digits are not mirror-symmetric)
  stl10    mirror + shift
  color    mirror, brightness +-0.1, hue +-0.5, saturation x[0.1, 3], contrast x[0.5, 1.5] (the
           amounts of tf.image on a [0, 1] scale; hue and saturation skipped on grey images), then
           shift; clipped to [0, 255]
  cutout   random erasing (Zhong et al. 2017, as the original's yu4u eraser): with probability
           p=0.3 per image, a rectangle of area fraction s ~ U[0.02, 0.4] and aspect ratio
           r ~ U[0.3, 1/0.3] (h = floor(sqrt(s*H*W*r)), w = floor(sqrt(s*H*W/r)), each at least 1
           and at most the image side), placed uniformly inside the image, is filled with uniform
           noise: an integer in [0, 255] per pixel and channel. It covers at most 40% of the image
           (h * w <= s*H*W, or 3 pixels on tiny images).
  none     the images unchanged

Shift: reflect-pad by `max(1, round(size/8))` pixels per side (1 at 8x8, 4 at 32x32, 12 at 96x96;
height and width each by their own size) and crop back at a random offset, i.e. translate by an
integer in [-pad, pad] on each axis with mirrored borders. Mirror and shift are computed together
as one gather of whole pixels at per-image reflected indices (no padded copy, no per-image loop).

Randomness: only TF stateless ops. Every draw is a tensor with one entry per image, so each image of
a batch gets its own mirror, offset, rectangle and colour change; every operation takes its own
sub-seed split from `seed` (`tf.random.experimental.stateless_split`). The same images and seed
give the same output, eagerly, in a `tf.function` and in a `tf.data` map. In a pipeline, give each
batch its own seed, e.g. `tf.random.experimental.stateless_fold_in(base_seed, batch_index)` over
`dataset.enumerate()`, or zip with `tf.data.Dataset.random(seed).batch(2)`.

The parts are exposed with their parameters (`mirror`, `shift`, `color`, `cutout`) so their
identity cases (`shift(x, 0, seed)`, `cutout(x, seed, p=0)`) return the input exactly.
"""
import tensorflow as tf

from libml.names import check_preset

# Random erasing defaults (p of the original make_aug_copy; the rest are the usual yu4u values).
CUTOUT_P = 0.3
CUTOUT_AREA = (0.02, 0.4)
CUTOUT_ASPECT = (0.3, 1 / 0.3)


def default_pad(size):
    """Shift for an image side of `size` pixels: max(1, round(size / 8)), halves rounded up."""
    if isinstance(size, int):
        return max(1, (size + 4) // 8)
    return tf.maximum(1, (size + 4) // 8)


def _batched(fn):
    """Lets `fn(images, ...)` take a single image [H, W, C] as well as a batch.

    AutoGraph is off: these functions are plain tensor code (no Python control flow on tensor
    values), and converting them made tracing them in a tf.function or tf.data map ~10x slower.
    """
    @tf.autograph.experimental.do_not_convert
    def wrapped(images, *args, **kwargs):
        images = tf.convert_to_tensor(images)
        if images.shape.rank == 3:
            return fn(images[None], *args, **kwargs)[0]
        if images.shape.rank != 4:
            raise ValueError(f'images must be [B, H, W, C] or [H, W, C], got shape {images.shape}.')
        return fn(images, *args, **kwargs)
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _dims(images):
    """(B, H, W): static ints where known, else scalar tensors."""
    dynamic = tf.shape(images)
    return tuple(images.shape[i] if images.shape[i] is not None else dynamic[i] for i in range(3))


def _seeds(seed, n):
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num=n))


def _uniform(shape, seed, minval=0., maxval=1., dtype=None):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval,
                                       dtype=dtype or tf.float32)


def _remap(images, rows, cols):
    """out[b, y, x] = images[b, rows[b, y], cols[b, x]]: one gather of whole pixels.

    A single flat gather of C-value pixels is several times faster than gathering rows and then
    columns (TF gathers of small slices along an inner axis are slow).
    """
    b, h, w = _dims(images)
    index = (tf.range(b)[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :])
    return tf.gather(tf.reshape(images, [-1, tf.shape(images)[3]]), index)


def _identity(b, size):
    """The map [B, size] that moves nothing."""
    return tf.tile(tf.range(size)[None, :], tf.stack([b, 1]))


def _mirror_map(b, w, seed):
    """Column map [B, W] of a left-right flip with probability 1/2 per image."""
    flip = _uniform([b], seed) < 0.5
    x = tf.range(w)[None, :]
    return tf.where(flip[:, None], w - 1 - x, x)


def _reflect(index, size):
    """Maps indices in [-size+1, 2*size-2] into [0, size) as REFLECT padding does."""
    index = tf.abs(index)
    index = tf.where(index >= size, 2 * (size - 1) - index, index)
    return tf.clip_by_value(index, 0, size - 1)  # only matters for 1-pixel sides


def _shift_maps(b, h, w, pad, seed):
    """Row and column maps ([B, H], [B, W]) of a reflect-pad-and-crop by `pad`; None if pad is 0."""
    if pad is None:
        pad_h, pad_w = default_pad(h), default_pad(w)
    elif isinstance(pad, (tuple, list)):
        pad_h, pad_w = pad
    else:
        pad_h = pad_w = pad
    if isinstance(pad_h, int) and isinstance(pad_w, int) and pad_h == 0 and pad_w == 0:
        return None
    seed_h, seed_w = _seeds(seed, 2)
    dy = tf.random.stateless_uniform([b], seed_h, -pad_h, pad_h + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([b], seed_w, -pad_w, pad_w + 1, dtype=tf.int32)
    rows = _reflect(tf.range(h)[None, :] + dy[:, None], h)
    cols = _reflect(tf.range(w)[None, :] + dx[:, None], w)
    return rows, cols


@_batched
def mirror(images, seed):
    """Flips each image left-right with probability 1/2."""
    b, h, w = _dims(images)
    return _remap(images, _identity(b, h), _mirror_map(b, w, seed))


@_batched
def shift(images, pad, seed):
    """Reflect-pads each image by `pad` pixels per side and crops it back at a random offset.

    `pad` is an int (both axes), a pair (height, width) or None for `default_pad` of each side; 0
    returns the images unchanged. Each image draws its own offsets in [-pad, pad].
    """
    b, h, w = _dims(images)
    maps = _shift_maps(b, h, w, pad, seed)
    return images if maps is None else _remap(images, *maps)


def _hue_saturation(x, dh, fs):
    """Rotates hue by dh turns and multiplies saturation by fs (clipped to 1), per image, in HSV.

    x: RGB in [0, 1], [B, H, W, 3]; dh, fs: [B]. The same as tf.image.adjust_hue then
    adjust_saturation, with one amount per image (tf.image draws one for the whole batch). The
    HSV kernels cost less CPU than the same formulas in RGB as elementwise ops (measured).
    """
    hsv = tf.image.rgb_to_hsv(x)
    h = tf.math.floormod(hsv[..., 0] + dh[:, None, None], 1.)
    s = tf.minimum(hsv[..., 1] * fs[:, None, None], 1.)
    return tf.image.hsv_to_rgb(tf.stack([h, s, hsv[..., 2]], axis=-1))


@_batched
def color(images, seed, brightness=0.1, hue=0.5, saturation=(0.1, 3.), contrast=(0.5, 1.5)):
    """Random brightness, hue, saturation and contrast, each per image, in that order; clipped.

    Amounts on a [0, 1] pixel scale as in tf.image: brightness adds U[-b, b], hue rotates by
    U[-hue, hue] turns, saturation and contrast multiply by U[lo, hi]. Grey images (C=1) skip hue
    and saturation.
    """
    dtype = images.dtype
    x = tf.cast(images, tf.float32) / 255.
    b = _dims(x)[:1]
    s_bright, s_hue, s_sat, s_con = _seeds(seed, 4)
    x = x + _uniform(b, s_bright, -brightness, brightness)[:, None, None, None]
    x = tf.clip_by_value(x, 0., 1.)

    def hue_saturation(x):
        return _hue_saturation(x, _uniform(b, s_hue, -hue, hue), _uniform(b, s_sat, *saturation))

    channels = images.shape[-1]
    if channels == 3:
        x = hue_saturation(x)
    elif channels is None:  # e.g. decode_png without `channels`: decided when the graph runs
        x = tf.cond(tf.shape(x)[-1] == 3, lambda: hue_saturation(x), lambda: x)
    mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
    x = (x - mean) * _uniform(b, s_con, *contrast)[:, None, None, None] + mean
    x = tf.clip_by_value(x * 255., 0., 255.)
    if dtype == tf.uint8:
        return tf.cast(tf.round(x), tf.uint8)
    return tf.cast(x, dtype)


def _random_bytes(n, seed):
    """n uniform integers in [0, 255] as uint8 (4 per 32-bit draw: draws are the cost)."""
    bits = tf.random.stateless_uniform([(n + 3) // 4], seed, minval=None, maxval=None,
                                       dtype=tf.uint32)
    return tf.reshape(tf.bitcast(bits, tf.uint8), [-1])[:n]


@_batched
def cutout(images, seed, p=CUTOUT_P, area=CUTOUT_AREA, aspect=CUTOUT_ASPECT, pixel_level=True):
    """Random erasing: with probability `p` per image, a random rectangle becomes uniform noise.

    Area fraction s ~ U[area], aspect ratio r ~ U[aspect] (height / width); the rectangle is
    h = floor(sqrt(s*H*W*r)) by w = floor(sqrt(s*H*W/r)), clamped to [1, H] x [1, W], at a uniform
    position inside the image. The noise is an integer in [0, 255] per pixel and channel (one value
    for the whole rectangle with pixel_level=False). p=0 returns the images unchanged.
    """
    if isinstance(p, (int, float)) and p <= 0:
        return images
    b, h, w = _dims(images)
    c = tf.shape(images)[3]
    s_apply, s_area, s_aspect, s_y, s_x, s_noise = _seeds(seed, 6)
    apply = _uniform([b], s_apply) < p
    hw = tf.cast(h * w, tf.float32)
    s = _uniform([b], s_area, *area) * hw
    r = _uniform([b], s_aspect, *aspect)
    eh = tf.clip_by_value(tf.cast(tf.floor(tf.sqrt(s * r)), tf.int32), 1, h)
    ew = tf.clip_by_value(tf.cast(tf.floor(tf.sqrt(s / r)), tf.int32), 1, w)
    # Uniform position in [0, side - extent]: floor(U[0, 1) * (side - extent + 1)).
    y0 = tf.cast(_uniform([b], s_y) * tf.cast(h - eh + 1, tf.float32), tf.int32)
    x0 = tf.cast(_uniform([b], s_x) * tf.cast(w - ew + 1, tf.float32), tf.int32)
    ys = tf.range(h)[None, :]
    xs = tf.range(w)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None]) & apply[:, None]  # [B, H]
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])  # [B, W]
    mask = in_y[:, :, None] & in_x[:, None, :]  # [B, H, W]
    # Noise only for the K images that get a rectangle (noise draws cost more than the rest),
    # then one gather from [images; noise]: pixel (b, y, x) of the k-th erased image reads noise
    # pixel (k, y, x) inside its rectangle, itself elsewhere.
    n_noisy = tf.reduce_sum(tf.cast(apply, tf.int32))
    if pixel_level:
        noise = _random_bytes(n_noisy * h * w * c, s_noise)
    else:
        noise = tf.reshape(tf.broadcast_to(_random_bytes(n_noisy, s_noise)[:, None, None],
                                           tf.stack([n_noisy, h * w, c])), [-1])
    rank = tf.cumsum(tf.cast(apply, tf.int32)) - 1  # k of each erased image
    pixel = tf.reshape(tf.range(h * w), tf.stack([1, h, w]))
    index = tf.where(mask, b * h * w + rank[:, None, None] * (h * w) + pixel,
                     tf.range(b)[:, None, None] * (h * w) + pixel)
    table = tf.concat([tf.reshape(images, tf.stack([-1, c])),
                       tf.reshape(tf.cast(noise, images.dtype), tf.stack([-1, c]))], axis=0)
    return tf.gather(table, index)


@_batched
def augment(images, preset, seed):
    """Applies preset `preset` (see the module doc) to a batch; same shape and dtype.

    Mirror and shift are applied as one gather. `color` changes colours before the geometric part
    (mirroring commutes with them), which then moves pixels once.
    """
    preset = check_preset(preset)
    if preset == 'none':
        return images
    shape = images.shape
    s_mirror, s_color, s_shift, s_cutout = _seeds(seed, 4)
    if preset == 'cutout':
        return tf.ensure_shape(cutout(images, s_cutout), shape)
    if preset == 'color':
        images = color(images, s_color)
    b, h, w = _dims(images)
    rows, cols = _shift_maps(b, h, w, None, s_shift)
    if preset != 'svhn':
        # mirror, then shift: out[y, x] = mirrored[rows[y], cols[x]] = image[rows[y], m(cols[x])]
        cols = tf.gather(_mirror_map(b, w, s_mirror), cols, batch_dims=1)
    return tf.ensure_shape(_remap(images, rows, cols), shape)

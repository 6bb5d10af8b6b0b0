"""Image files: the one place that turns an image file into the pixels a model sees (folders of
images are listed by libml/folders.py).

Dataset creation (scripts/create_datasets.py custom) and prediction (libml/predict.py) both call
this module, so the same file gives the model the same pixels in training and in prediction.

Decoding, in two steps (an exported model reproduces both in graph ops: (a') and (b))
  (a) `decode_file(path)` reads the file with Pillow -> uint8 numpy [h, w, n], n = 1 grey,
      2 grey + alpha, 3 RGB, 4 RGBA:
      - formats: PNG, JPEG (and MPO, JPEG from cameras), GIF (first frame), BMP, WEBP: the ones
        TensorFlow's decode_image also reads; anything else is refused;
      - the EXIF orientation is applied (`PIL.ImageOps.exif_transpose`), so [h, w] is upright;
      - 1-bit -> grey 0/255; palette -> RGB, or RGBA when it has a transparent entry; a grey or
        RGB image with a transparent colour (PNG tRNS) -> grey+alpha or RGBA (alpha 0 exactly
        where the colour matches); CMYK, YCbCr and other colour modes -> RGB (Pillow's convert);
      - 16-bit grey PNG (Pillow modes I;16*, and 32-bit integer grey, mode I, taken as 16-bit):
        v8 = round(v / 257), clipped to [0, 255] (exact: v / 257 is never halfway; the same as
        tf.io.decode_png(dtype=tf.uint16) followed by tf.round(v / 257)); 32-bit float grey
        (mode F) is taken as 0..255: round(clip(v, 0, 255));
      - every other 16-bit PNG (grey + alpha, RGB, RGBA): Pillow keeps the high byte,
        v8 = v >> 8 = floor(v / 256), which is also what tf.io.decode_png(dtype=tf.uint8) gives;
        it differs from round(v / 257) by at most 1. A 16-bit grey + alpha PNG, which Pillow
        reads as RGBA with R = G = B, is returned as grey + alpha.
  (a') `decode_encoded(data)` is (a) in TensorFlow ops, for a graph that takes encoded images (an
      exported model's serving signature, libml/export.py). It gives the same pixels as (a) for
      PNG (1-, 2-, 4-, 8- and 16-bit; grey, grey + alpha, RGB, RGBA, palette; interlaced or not;
      a palette's transparency and a grey or RGB image's transparent colour, tRNS, compared as
      Pillow compares it) and for JPEG (grey, RGB; libjpeg's accurate integer transform, as
      Pillow uses), EXIF orientation applied to both (found by walking the JPEG segments or PNG
      chunks with string ops; tag 0x0112 of the first directory). What differs:
      - EXIF and tRNS are looked for in the first 128 KiB of a file only (a camera JPEG puts its
        EXIF first, tRNS precedes the image data; a PNG's eXIf chunk after large image data is
        missed); an orientation found only in XMP metadata is not read;
      - CMYK JPEG (rare; print workflows) converts to RGB with another formula;
      - GIF, BMP and WEBP go through tf.io.decode_image (first frame of a GIF): the same pixels
        when opaque and upright; transparency and orientation may differ;
      - no size limit (below) is checked: the graph decodes what it is given.
  (b) `to_model_pixels(pixels, height, width, channels)`, TensorFlow ops (eager, in tf.data, or
      in an exported graph), uint8 [h, w, n] -> uint8 [height, width, channels], channels 1 or 3
      (create_datasets writes 1 when every image is grey, else 3):
      1. alpha (n = 2 or 4) composited on white, in integers:
         c' = floor((c * a + 255 * (255 - a) + 127) / 255) = round((c*a + 255*(255-a)) / 255)
         (never halfway: 255 is odd), then the alpha channel is dropped;
      2. grey -> RGB by copying the grey channel; RGB -> grey by luma, in integers:
         y = floor((299 R + 587 G + 114 B + 500) / 1000) (0.299/0.587/0.114, halves rounded up);
      3. only when [h, w] differs from [height, width]: tf.image.resize(float32, bilinear,
         antialias=True) to [height, width] as a whole (aspect ratio not kept, no crop), then
         tf.round (halves to even), clipped to [0, 255]. An image of the model's size is used
         exactly as decoded.
  (b') `to_model_channels(pixels, channels)` is steps 1 and 2 in numpy, the same integers, for
      images of the model's size: create_datasets.py custom converts them without TensorFlow.

Size limit
  An image above `max_pixels` (width x height, default MAX_IMAGE_PIXELS = 40 megapixels, raised
  with --max_image_pixels on create_datasets.py and the trainer's --perform_inference) is refused
  from its header, before any pixel is decoded, with a reason naming the limit and the flag: a
  small file can claim a huge size (a 100-megapixel 1-bit PNG compresses to a few kilobytes and
  would take 100 MB to 400 MB once decoded). This module checks every image it opens, so
  Pillow's own guard (a warning above 89 Mpx, an error above 179 Mpx, which would ignore the flag
  and print a second line) is turned off when this module is imported.
"""
import concurrent.futures
import dataclasses
import os
import stat

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from libml import folders
from libml.records import tf  # TensorFlow, imported at first use: decode_file does not need it

Image.MAX_IMAGE_PIXELS = None  # see "Size limit" above: this module's own limit replaces it

MAX_IMAGE_PIXELS = 40_000_000
MODEL_CHANNELS = (1, 3)
# Formats TensorFlow's decode_image reads too (MPO: multi-picture JPEG from cameras).
FORMATS = ('PNG', 'JPEG', 'MPO', 'GIF', 'BMP', 'WEBP')


_PROBE_THREADS = min(16, 2 * (os.cpu_count() or 1))  # header reads wait on the disk, not the CPU


class ImageError(Exception):
    """A file that is not a usable image; the message is the reason (without the file name)."""


class ImageTooLarge(ImageError):
    """An image above the pixel limit (refused from its header)."""


# ----------------------------------------------------------------------------------------------
# Reading a file: header (probe) and pixels (decode_file).

@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """An image's facts from its header: upright size and the channels decode_file returns."""
    width: int
    height: int
    channels: int  # 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA

    @property
    def grey(self):
        return self.channels <= 2


def _open_regular(path):
    """A binary file object of `path`, which must be a regular file.

    Opened without blocking and checked on the open descriptor, so a FIFO (or a file swapped for
    one after listing) is refused instead of waiting forever for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0) | getattr(os, 'O_BINARY', 0))
    except OSError as e:
        raise ImageError(f'cannot be opened ({e.strerror})') from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError(folders.NOT_REGULAR)
    return os.fdopen(fd, 'rb')


def _is_grey_alpha_16(im):
    """A 16-bit grey + alpha PNG, which Pillow reads as RGBA (R = G = B)."""
    return (im.format == 'PNG' and im.mode == 'RGBA' and bool(im.tile)
            and im.tile[0].args == 'LA;16B')


def _channels(im):
    """The channel count decode_file returns for an opened (not yet decoded) image."""
    transparent = 'transparency' in im.info
    if im.mode in ('1', 'L', 'I', 'F') or im.mode.startswith('I;16'):
        return 2 if transparent else 1
    if im.mode in ('LA', 'La') or _is_grey_alpha_16(im):
        return 2
    if im.mode in ('RGBA', 'RGBa', 'PA') or (im.mode in ('P', 'RGB') and transparent):
        return 4
    return 3


def _size_error(width, height, max_pixels):
    return ImageTooLarge(f'{width}x{height} = {width * height:,} pixels, above the limit of '
                         f'{max_pixels:,} (--max_image_pixels)')


def _opened(f, max_pixels):
    """Pillow's image of open file `f`, header read and checked (format, size limit)."""
    try:
        im = Image.open(f, formats=None)
    except UnidentifiedImageError:
        raise ImageError('cannot be decoded (not an image)') from None
    except Exception as e:  # noqa: BLE001  Pillow reports bad headers with many exception types
        raise ImageError(f'cannot be decoded ({_reason(e)})') from None
    if im.format not in FORMATS:
        im.close()
        raise ImageError(f'{im.format} image, not PNG or JPEG')
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise _size_error(width, height, max_pixels)
    return im


def _reason(e):
    text = str(e).splitlines()[0][:80] if str(e) else ''
    return text or type(e).__name__


def _orientation_swaps(im):
    """True if the EXIF orientation turns the image by 90 degrees (5 to 8)."""
    return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def probe(path, max_pixels=MAX_IMAGE_PIXELS, upright=True):
    """ImageInfo of `path` from its header; raises ImageError (not an image, too large...).

    upright: read the EXIF orientation to give the upright size. Pillow finds a PNG's EXIF chunk
    only by decoding up to it, so with upright=True a PNG is decoded (headers only otherwise).
    """
    with _open_regular(path) as f:
        with _opened(f, max_pixels) as im:
            width, height = im.size
            try:
                channels = _channels(im)
                if upright and _orientation_swaps(im):
                    width, height = height, width
            except Exception as e:  # noqa: BLE001  (as in _opened)
                raise ImageError(f'cannot be decoded ({_reason(e)})') from None
    return ImageInfo(width, height, channels)


def probe_all(paths, max_pixels=MAX_IMAGE_PIXELS, upright=True, progress=None):
    """[ImageInfo or ImageError] of `paths` (in order), read in parallel threads.

    progress: None, or a callable wrapping the result iterator (e.g. a tqdm bar).
    """
    def one(path):
        try:
            return probe(path, max_pixels, upright)
        except ImageError as e:
            return e

    with concurrent.futures.ThreadPoolExecutor(_PROBE_THREADS) as pool:
        results = pool.map(one, paths)
        return list(progress(results) if progress else results)


def _to_8bit(im):
    """A 16-bit or 32-bit grey image -> uint8 [h, w] (formulas in the module doc)."""
    values = np.asarray(im)
    if im.mode == 'F':
        return np.round(np.clip(values, 0, 255)).astype(np.uint8)
    return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)


def decode_file(path, max_pixels=MAX_IMAGE_PIXELS):
    """The pixels of image file `path`: uint8 numpy [h, w, n], n = 1, 2, 3 or 4 (module doc, (a)).

    Raises ImageError (not a regular file, not an image, damaged, above `max_pixels`).
    """
    with _open_regular(path) as f:
        with _opened(f, max_pixels) as im:
            try:
                return _pixels(im)
            except ImageError:
                raise
            except Exception as e:  # noqa: BLE001  (as in _opened: truncated data, bad chunks...)
                raise ImageError(f'cannot be decoded ({_reason(e)})') from None


def _pixels(im):
    """uint8 [h, w, n] of an opened image (see decode_file)."""
    channels = _channels(im)  # before decoding: it reads the PNG's raw mode
    grey_alpha_16 = _is_grey_alpha_16(im)
    ImageOps.exif_transpose(im, in_place=True)  # decodes; `info` (transparency) is kept
    if im.mode in ('I', 'F') or im.mode.startswith('I;16'):
        grey = _to_8bit(im)
        if channels == 1:
            return grey[:, :, None]
        alpha = np.where(np.asarray(im) == im.info['transparency'], 0, 255).astype(np.uint8)
        return np.stack([grey, alpha], axis=2)
    if grey_alpha_16:
        return np.asarray(im)[:, :, [0, 3]]
    mode = {1: 'L', 2: 'LA', 3: 'RGB', 4: 'RGBA'}[channels]
    if im.mode != mode:
        im = im.convert(mode)  # applies a tRNS colour or palette transparency as alpha
    pixels = np.asarray(im, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def decode_encoded(data):
    """(a) in TensorFlow ops: encoded image bytes (string scalar) -> uint8 tensor [h, w, n],
    n = 1..4 as decode_file returns; differences in the module doc, (a'). A file TensorFlow
    cannot decode raises tf.errors.InvalidArgumentError when the graph runs."""
    data = tf.convert_to_tensor(data, tf.string)
    head = _FileHead(data)

    def png():
        depth, colour = head.uint(24, 1), head.uint(25, 1)  # of IHDR, the first chunk
        grey16 = (depth == 16) & (colour == 0)

        def rounded_grey16():  # round(v / 257), as decode_file; (2v + 257) // 514 is exact
            v = tf.cast(tf.io.decode_png(data, 1, tf.uint16), tf.int32)
            return tf.cast((2 * v + 257) // 514, tf.uint8), v
        # Any other PNG: 16-bit samples keep their high byte, as in decode_file.
        eight_bit = lambda: (lambda x: (x, tf.cast(x, tf.int32)))(tf.io.decode_png(data, 0))
        pixels, compared = tf.cond(grey16, rounded_grey16, eight_bit)
        # A grey or RGB PNG's transparent colour (tRNS: 16-bit samples) becomes an alpha
        # channel, compared as decode_file (Pillow) compares it: with the 16-bit value of a
        # 16-bit grey PNG, else with the 8-bit value (Pillow's quirk, kept: a 2- or 4-bit grey or
        # a 16-bit RGB PNG compares its 8-bit values with the 16-bit key); a 1-bit key is 0 or 255.
        trns, exif = head.png_chunks()

        def with_alpha():
            key = tf.cast(head.uint(trns + 2 * tf.range(tf.shape(pixels, tf.int64)[2]), 2),
                          tf.int32)
            key = tf.where(depth == 1, tf.minimum(key, 1) * 255, key)
            opaque = tf.reduce_any(tf.not_equal(compared, key), -1, keepdims=True)
            return tf.concat([pixels, tf.cast(opaque, tf.uint8) * 255], -1)
        keyed = (trns >= 0) & ((colour == 0) | (colour == 2))
        pixels = tf.cond(keyed, with_alpha, lambda: pixels)
        return _upright(pixels, _exif_orientation(head, exif))

    def jpeg():
        pixels = tf.io.decode_jpeg(data, 0, dct_method='INTEGER_ACCURATE')
        return _upright(pixels, _exif_orientation(head, head.jpeg_exif()))

    pixels = tf.case(
        [(tf.equal(tf.strings.substr(data, 0, 8), _PNG_SIGNATURE), png),
         (tf.io.is_jpeg(data), jpeg)],
        default=lambda: tf.io.decode_image(data, 0, tf.uint8, expand_animations=False))
    return tf.ensure_shape(pixels, [None, None, None])


class _FileHead:
    """The first SCAN_BYTES bytes of an encoded image, read with graph ops, and the places in
    them that decode_encoded needs: the EXIF block (JPEG: the first APP1 segment starting
    "Exif\\0\\0"; PNG: the eXIf chunk) and a PNG's tRNS chunk."""
    SCAN_BYTES = 1 << 17
    _TRNS, _EXIF = 0x74524E53, 0x65584966  # PNG chunk types 'tRNS', 'eXIf'

    def __init__(self, data):
        raw = tf.io.decode_raw(tf.strings.substr(data, 0, self.SCAN_BYTES), tf.uint8)
        self.size = tf.size(raw, tf.int64)
        self.bytes = tf.pad(raw, [[0, 1]])  # the byte read for any position past the end: 0

    def uint(self, pos, size, little=False):
        """Unsigned integers of `size` bytes at byte positions `pos` (any shape), int64."""
        index = tf.cast(pos, tf.int64)[..., None] + tf.range(size, dtype=tf.int64)
        index = tf.where((index >= 0) & (index < self.size), index, self.size)
        values = tf.cast(tf.gather(self.bytes, index), tf.int64)
        weights = 256 ** tf.range(size, dtype=tf.int64)
        weights = tf.where(little, weights, tf.reverse(weights, [0]))
        return tf.reduce_sum(values * weights, -1)

    def png_chunks(self):
        """Where the data of the first tRNS and eXIf chunks start (-1: none), int64 []. Chunks
        are LENGTH(4) TYPE(4) DATA CRC(4), after the 8-byte signature."""
        def step(pos, trns, exif):
            kind = self.uint(pos + 4, 4)
            return (pos + 12 + self.uint(pos, 4),
                    tf.where((trns < 0) & (kind == self._TRNS), pos + 8, trns),
                    tf.where((exif < 0) & (kind == self._EXIF), pos + 8, exif))
        none = tf.constant(-1, tf.int64)
        return tf.while_loop(
            lambda pos, trns, exif: (pos + 8 <= self.size) & ((trns < 0) | (exif < 0)), step,
            (tf.constant(8, tf.int64), none, none), maximum_iterations=1024)[1:]

    def jpeg_exif(self):
        """Where the EXIF block's TIFF header starts (-1: none), int64 []: segments are FF xx
        LENGTH(2) ... up to the start of the scan (FF DA); EXIF is an APP1 (FF E1) segment whose
        data starts Exif\\0\\0."""
        def step(pos, found):
            exif = ((self.uint(pos + 1, 1) == 0xE1) & (self.uint(pos + 4, 4) == 0x45786966)
                    & (self.uint(pos + 8, 2) == 0))
            return pos + 2 + self.uint(pos + 2, 2), tf.where(exif, pos + 10, found)
        more = lambda pos, found: ((found < 0) & (pos + 4 <= self.size)
                                   & (self.uint(pos, 1) == 0xFF) & (self.uint(pos + 1, 1) != 0xDA))
        return tf.while_loop(more, step, (tf.constant(2, tf.int64), tf.constant(-1, tf.int64)),
                             maximum_iterations=1024)[1]


_IFD_ENTRIES = 64  # entries of the first EXIF directory searched for the orientation


def _exif_orientation(head, tiff):
    """EXIF orientation 1..8 (1: none, or not a valid value), int32 []: tag 0x0112 of the first
    directory (IFD0) of the TIFF structure at `tiff` (-1: no EXIF), as Pillow reads it."""
    little = tf.equal(head.uint(tiff, 2), 0x4949)  # byte order: II little-endian, MM big
    ifd = tiff + head.uint(tiff + 4, 4, little)
    index = tf.range(_IFD_ENTRIES, dtype=tf.int64)
    entries = ifd + 2 + 12 * index  # tag(2) type(2) count(4) value(4)
    match = (head.uint(entries, 2, little) == 0x0112) & (index < head.uint(ifd, 2, little))
    value = tf.gather(head.uint(entries + 8, 2, little), tf.argmax(tf.cast(match, tf.int32)))
    valid = (tiff >= 0) & tf.reduce_any(match) & (value >= 1) & (value <= 8)
    return tf.cast(tf.where(valid, value, 1), tf.int32)


def _upright(pixels, orientation):
    """[h, w, n] stored with EXIF `orientation` -> as displayed (PIL.ImageOps.exif_transpose)."""
    # In float32 (exact for bytes): for other types, oneDNN logs an error line on some CPUs when
    # it falls back to Eigen.
    def turned():
        x = tf.cast(pixels, tf.float32)
        transposed = lambda: tf.transpose(x, [1, 0, 2])
        return tf.cast(tf.switch_case(orientation - 2, [
            lambda: tf.reverse(x, [1]),                      # 2 mirrored
            lambda: tf.reverse(x, [0, 1]),                   # 3 upside down
            lambda: tf.reverse(x, [0]),                      # 4 mirrored upside down
            transposed,                                      # 5
            lambda: tf.reverse(transposed(), [1]),           # 6 turned 90 degrees clockwise
            lambda: tf.reverse(transposed(), [0, 1]),        # 7
            lambda: tf.reverse(transposed(), [0]),           # 8 turned 90 degrees anticlockwise
        ]), tf.uint8)
    return tf.cond(orientation == 1, lambda: pixels, turned)  # 1: upright


# ----------------------------------------------------------------------------------------------
# Model pixels.

def to_model_pixels(pixels, height, width, channels):
    """uint8 [h, w, n] (n = 1..4, as decode_file returns) -> uint8 tensor [height, width, channels].

    channels: 1 or 3. TensorFlow ops only (eager, tf.data or a graph); steps and formulas in the
    module doc, (b).
    """
    if channels not in MODEL_CHANNELS:
        raise ValueError(f'models take 1 or 3 channels, not {channels}')
    x = tf.ensure_shape(tf.convert_to_tensor(pixels, tf.uint8), [None, None, None])
    v = tf.cast(x, tf.int32)  # integer arithmetic: the same values on every platform

    def composite():
        colour, alpha = v[:, :, :-1], v[:, :, -1:]
        return (colour * alpha + 255 * (255 - alpha) + 127) // 255

    v = tf.cond(tf.equal(tf.shape(v)[2] % 2, 0), composite, lambda: v)
    if channels == 1:
        luma = lambda: (299 * v[:, :, :1] + 587 * v[:, :, 1:2] + 114 * v[:, :, 2:3] + 500) // 1000
        v = tf.cond(tf.equal(tf.shape(v)[2], 3), luma, lambda: v)
    else:
        v = tf.cond(tf.equal(tf.shape(v)[2], 1), lambda: tf.tile(v, [1, 1, 3]), lambda: v)
    size = tf.shape(v)[:2]

    def resize():
        out = tf.image.resize(tf.cast(v, tf.float32), [height, width], 'bilinear', antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.int32)

    same = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    v = tf.cond(same, lambda: v, resize)
    return tf.ensure_shape(tf.cast(v, tf.uint8), [height, width, channels])


def to_model_channels(pixels, channels):
    """Steps 1 and 2 of to_model_pixels in numpy: uint8 [h, w, n] (n = 1..4, as decode_file
    returns) -> uint8 numpy [h, w, channels], channels 1 or 3; `pixels` itself if n == channels."""
    if channels not in MODEL_CHANNELS:
        raise ValueError(f'models take 1 or 3 channels, not {channels}')
    if pixels.shape[2] == channels:
        return pixels
    v = pixels.astype(np.int32)
    if v.shape[2] % 2 == 0:  # alpha composited on white
        colour, alpha = v[:, :, :-1], v[:, :, -1:]
        v = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    if channels == 1 and v.shape[2] == 3:
        v = (299 * v[:, :, :1] + 587 * v[:, :, 1:2] + 114 * v[:, :, 2:3] + 500) // 1000
    elif channels == 3 and v.shape[2] == 1:
        v = np.repeat(v, 3, axis=2)
    return v.astype(np.uint8)


_NO_PIXELS = np.zeros([1, 1, 1], np.uint8)


def pixel_dataset(paths, height, width, channels, max_pixels=MAX_IMAGE_PIXELS):
    """Model pixels of `paths`, decoded in parallel: (dataset, failures).

    dataset   tf.data.Dataset of (row int64 [], uint8 [height, width, channels]) in `paths` order;
              the files that cannot be used are left out (their rows are missing);
    failures  {row: reason}, filled while the dataset is iterated.
    Decoding runs in tf.data's threads (Pillow releases the GIL while it decodes), ahead of the
    consumer: decode_file, then to_model_pixels.
    """
    paths = [os.fspath(p) for p in paths]
    failures = {}

    def decode(row):
        try:
            return decode_file(paths[int(row)], max_pixels), True
        except ImageError as e:
            failures[int(row)] = str(e)
            return _NO_PIXELS, False

    def load(row):
        pixels, ok = tf.numpy_function(decode, [row], [tf.uint8, tf.bool])
        return row, pixels, ok

    ds = tf.data.Dataset.range(len(paths))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.filter(lambda row, pixels, ok: ok)
    ds = ds.map(lambda row, pixels, ok: (row, to_model_pixels(pixels, height, width, channels)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds, failures

"""libml/images.py, the one lister and decoder: listing rules and order, decode_file, to_model_pixels,
the pixel limit, FIFOs; and that create_datasets.py custom and inference give the model the very
same pixels, in the same order, for the same folder."""
import os
import re
import struct
import threading
import time
import zlib
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageFile

from conftest import REPO, assert_ok, assert_user_error, run_script
import libml  # noqa: F401,I100  (before TensorFlow)
import tensorflow as tf
from libml import folders, images, predict, records
from libml.sources import custom
from libml.utils import UserError
from test_inference import make_run

CREATE = os.path.join(REPO, 'scripts', 'create_datasets.py')
REALMIX = os.path.join(REPO, 'realmix.py')


def save(path, pixels, mode=None, fmt=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels, mode)
    image.save(path, fmt or ('JPEG' if path.suffix.lower() in ('.jpg', '.jpeg') else 'PNG'),
               **kwargs)
    return path


def grey_png(path, width, height, rows=None):
    """A black 1-bit grey PNG claiming width x height pixels, with `rows` rows of data (all by
    default): a few kilobytes on disk, width * height bytes once Pillow decodes it."""
    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    z = zlib.compressobj(9)
    idat = b''.join(z.compress(row) for _ in range(height if rows is None else rows)) + z.flush()
    ihdr = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', idat)
                     + chunk(b'IEND', b''))
    return path


TF_NATIVE_LOG = re.compile(r'^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)')
PROGRESS_BAR = re.compile(r'\d+%\|.*\| *\d+/\d+ ')


def message_lines(stderr):
    """The lines of `stderr` that are messages: not progress bars (tqdm), not blank, not the
    start-up lines TensorFlow's C++ runtime logs by itself."""
    lines = [line.rsplit('\r', 1)[-1] for line in stderr.split('\n')]
    return [line for line in lines if line.strip() and not TF_NATIVE_LOG.match(line)
            and not PROGRESS_BAR.search(line)]


def in_thread(fn, timeout=60):
    """fn() in a daemon thread; fails the test (instead of hanging it) if it does not return."""
    result = {}

    def target():
        try:
            result['value'] = fn()
        except BaseException as e:  # noqa: BLE001  (re-raised in the test's thread)
            result['error'] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f'still running after {timeout} s (blocked on a FIFO?)'
    if 'error' in result:
        raise result['error']
    return result['value']


# ----------------------------------------------------------------------------------------------
# Listing.

def test_listing_rules_and_natural_order(tmp_path):
    root = tmp_path / 'folder'
    names = ['cat/img10.png', 'cat/img2.png', 'cat/Img11.PNG', 'cat/b.jpeg', 'cat/deep/a.jpg',
             'cat2/a.png', 'cat 2/a.png', 'top.png',
             # passed over
             '.DS_Store', 'cat/Thumbs.db', 'cat/desktop.ini', 'cat/notes.txt', 'cat/._img2.png',
             '.hidden/x.png', '__MACOSX/cat/._a.png', 'cat/x.png.txt']
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b'x')
    os.mkfifo(root / 'cat' / 'fifo.png')
    os.symlink(root / 'cat', root / 'cat' / 'deep' / 'loop')  # a folder linking to its parent
    (root / 'empty').mkdir()
    listing = folders.list_images(root)
    assert listing.root == str(root)
    assert listing.images == ['cat/b.jpeg', 'cat/deep/a.jpg', 'cat/img2.png', 'cat/img10.png',
                              'cat/Img11.PNG', 'cat2/a.png', 'cat 2/a.png', 'top.png']
    reasons = dict(listing.skipped)
    assert reasons == {
        '.DS_Store': folders.HIDDEN, '.hidden/': folders.HIDDEN, '__MACOSX/': folders.MACOS_FOLDER,
        'cat/._img2.png': folders.HIDDEN, 'cat/Thumbs.db': folders.NOT_AN_IMAGE,
        'cat/desktop.ini': folders.NOT_AN_IMAGE, 'cat/notes.txt': folders.NOT_AN_IMAGE,
        'cat/x.png.txt': folders.NOT_AN_IMAGE, 'cat/fifo.png': folders.NOT_REGULAR,
        'cat/deep/loop/': 'link to one of its parent folders (a loop)'}
    assert listing.folders == ['cat', 'cat2', 'cat 2', 'empty']
    assert listing.path('cat/deep/a.jpg') == str(root / 'cat' / 'deep' / 'a.jpg')
    # The key compares folder by folder: a folder's files stay together.
    assert sorted(['a1/z', 'a01/b', 'a1/a', 'a 1/c', 'A1b'], key=folders.natural_key) == \
        ['a01/b', 'a1/a', 'a1/z', 'A1b', 'a 1/c']
    with pytest.raises(UserError, match='is not a folder'):
        folders.list_images(root / 'top.png')


def test_class_of():
    assert folders.class_of('cat/a.png') == 'cat'
    assert folders.class_of('cat/nested/a.png') == 'cat'
    assert folders.class_of('7_chat noir.png') == 'chat noir'
    assert folders.class_of('a.png') is None and folders.class_of('7.png') is None
    assert folders.class_of('7_cat.png', numbered_names=False) is None


# ----------------------------------------------------------------------------------------------
# decode_file and probe.

def test_decode_file_modes(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0
    path = save(tmp_path / 'rgba.png', rgba)
    np.testing.assert_array_equal(images.decode_file(path), rgba)  # alpha kept for (b)

    palette = Image.new('P', (6, 4))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    index = rng.integers(0, 3, (4, 6), dtype=np.uint8)
    palette.putdata(index.ravel().tolist())
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(images.decode_file(save(tmp_path / 'p.png', palette)),
                                  colours[index])
    with_alpha = images.decode_file(save(tmp_path / 'pt.png', palette, transparency=0))
    np.testing.assert_array_equal(with_alpha[..., :3], colours[index])
    np.testing.assert_array_equal(with_alpha[..., 3], np.where(index == 0, 0, 255))

    deep = (np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000 + 128)
    got = images.decode_file(save(tmp_path / 'g16.png', deep))
    assert got.shape == (4, 5, 1) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[..., 0], np.round(deep / 257))
    la16 = np.stack([deep, np.full_like(deep, 65535)], axis=2)
    (tmp_path / 'la16.png').write_bytes(tf.io.encode_png(la16).numpy())
    np.testing.assert_array_equal(images.decode_file(tmp_path / 'la16.png'), la16 >> 8)
    rgb16 = np.stack([deep] * 3, axis=2)
    (tmp_path / 'rgb16.png').write_bytes(tf.io.encode_png(rgb16).numpy())
    np.testing.assert_array_equal(images.decode_file(tmp_path / 'rgb16.png'), rgb16 >> 8)

    la = rng.integers(0, 256, (3, 4, 2), dtype=np.uint8)
    np.testing.assert_array_equal(images.decode_file(save(tmp_path / 'la.png', la, 'LA')), la)
    bits = images.decode_file(save(tmp_path / 'bits.png', Image.fromarray(np.eye(3, dtype=bool))))
    np.testing.assert_array_equal(bits[..., 0], np.eye(3) * 255)
    grey = np.array([[0, 10], [20, 30]], np.uint8)
    keyed = images.decode_file(save(tmp_path / 'trns.png', grey, transparency=10))
    np.testing.assert_array_equal(keyed, np.stack([grey, [[255, 0], [255, 255]]], axis=2))
    cmyk = save(tmp_path / 'cmyk.jpg', Image.new('CMYK', (4, 3), (0, 255, 0, 0)))
    np.testing.assert_array_equal(images.decode_file(cmyk),
                                  np.asarray(Image.open(cmyk).convert('RGB')))

    (tmp_path / 'fake.png').write_bytes(b'not an image')
    with pytest.raises(images.ImageError, match='not an image'):
        images.decode_file(tmp_path / 'fake.png')
    save(tmp_path / 'tiff.png', rgba, fmt='TIFF')
    with pytest.raises(images.ImageError, match='TIFF image, not PNG or JPEG'):
        images.decode_file(tmp_path / 'tiff.png')
    whole = save(tmp_path / 'cut.jpg', rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).read_bytes()
    (tmp_path / 'cut.jpg').write_bytes(whole[:len(whole) // 2])
    with pytest.raises(images.ImageError, match='cannot be decoded'):
        images.decode_file(tmp_path / 'cut.jpg')


def test_exif_orientation_applied_and_probe_agrees(tmp_path):
    stored = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    paths = [save(tmp_path / 'photo.jpg', stored, exif=exif, quality=95),
             save(tmp_path / 'photo.png', stored, exif=exif)]
    for path in paths:
        raw = np.asarray(Image.open(path))
        got = images.decode_file(path)
        assert got.shape == (10, 6, 3)
        np.testing.assert_array_equal(got, np.rot90(raw, k=-1))
        assert images.probe(path) == images.ImageInfo(width=6, height=10, channels=3)
        assert images.probe(path, upright=False) == images.ImageInfo(10, 6, 3)
    for path in tmp_path.glob('*.png'):  # probe's channels are decode_file's
        info = images.probe(path)
        assert (info.height, info.width, info.channels) == images.decode_file(path).shape


# ----------------------------------------------------------------------------------------------
# to_model_pixels.

def test_alpha_composited_on_white_exactly():
    colour = np.array([0, 100, 200, 255, 37, 0, 255], np.uint8)
    alpha = np.array([0, 128, 51, 1, 254, 128, 0], np.uint8)
    la = np.stack([colour, alpha], axis=1)[None]  # [1, 7, 2]
    want = [round(Fraction(int(c) * int(a) + 255 * (255 - int(a)), 255)) for c, a in zip(colour, alpha)]
    assert want == [255, 177, 244, 255, 38, 127, 255]
    got = images.to_model_pixels(la, 1, 7, 1)
    assert got.dtype == tf.uint8 and got.shape == (1, 7, 1)
    assert got.numpy().ravel().tolist() == want
    rgba = np.concatenate([np.stack([colour] * 3, axis=1), alpha[:, None]], axis=1)[None]
    assert images.to_model_pixels(rgba, 1, 7, 3).numpy().reshape(7, 3).tolist() == \
        [[w] * 3 for w in want]
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (9, 11, 4)).astype(np.int64)
    exact = np.vectorize(lambda c, a: round(Fraction(int(c * a + 255 * (255 - a)), 255)))
    np.testing.assert_array_equal(images.to_model_pixels(x.astype(np.uint8), 9, 11, 3),
                                  exact(x[..., :3], x[..., 3:]))


def test_luma_and_grey_to_rgb():
    # Exact luma, halves rounded up; `halfway` is a colour whose luma is exactly k + 0.5.
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (1000, 3))
    halfway = next(p for p in np.ndindex(256, 256, 4) if (299 * p[0] + 587 * p[1] + 114 * p[2]) % 1000 == 500)
    rgb = np.concatenate([rgb, [halfway, [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]])
    want = [int(Fraction(int(299 * r + 587 * g + 114 * b), 1000) + Fraction(1, 2)) for r, g, b in rgb]
    got = images.to_model_pixels(rgb.astype(np.uint8)[None], 1, len(rgb), 1).numpy().ravel()
    assert got.tolist() == want
    assert want[-5:] == [int((299 * halfway[0] + 587 * halfway[1] + 114 * halfway[2]) / 1000) + 1,
                         76, 150, 29, 255]
    grey = rng.integers(0, 256, (4, 5, 1), dtype=np.uint8)
    np.testing.assert_array_equal(images.to_model_pixels(grey, 4, 5, 3), np.repeat(grey, 3, 2))
    np.testing.assert_array_equal(images.to_model_pixels(grey, 4, 5, 1), grey)
    with pytest.raises(ValueError, match='1 or 3 channels'):
        images.to_model_pixels(grey, 4, 5, 4)


def test_resize_only_when_the_size_differs():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    same = images.to_model_pixels(x, 6, 9, 3)
    np.testing.assert_array_equal(same, x)  # of the model's size: exactly as decoded
    for h, w in ((4, 4), (12, 5), (6, 8)):
        got = images.to_model_pixels(x, h, w, 3)
        assert got.shape == (h, w, 3) and got.dtype == tf.uint8
        want = tf.image.resize(x.astype(np.float32), [h, w], 'bilinear', antialias=True).numpy()
        np.testing.assert_array_equal(got, np.clip(np.round(want), 0, 255))
    # In a graph (tf.function, tf.data) the same ops give the same values.
    graph = tf.function(lambda p: images.to_model_pixels(p, 4, 4, 1),
                        input_signature=[tf.TensorSpec([None, None, None], tf.uint8)])
    for pixels in (x, rng.integers(0, 256, (7, 3, 4), dtype=np.uint8), x[..., :1]):
        np.testing.assert_array_equal(graph(pixels), images.to_model_pixels(pixels, 4, 4, 1))


# ----------------------------------------------------------------------------------------------
# The pixel limit.

def test_size_limit_from_the_header_without_decoding(tmp_path, monkeypatch):
    big = grey_png(tmp_path / 'big.png', 10001, 10001)  # 100 megapixels
    assert big.stat().st_size < 100_000
    liar = grey_png(tmp_path / 'liar.png', 100_000, 100_000, rows=1)  # claims 10 gigapixels
    def no_decoding(self, *args):
        raise AssertionError('decoded')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)
    for path, text in ((big, '10001x10001 = 100,020,001 pixels'),
                       (liar, '100000x100000 = 10,000,000,000 pixels')):
        for read in (images.decode_file, images.probe):
            with pytest.raises(images.ImageTooLarge, match=r'above the limit of 40,000,000 '
                                                           r'\(--max_image_pixels\)') as e:
                read(path)
            assert text in str(e.value) and '\n' not in str(e.value)
    assert isinstance(images.probe_all([big])[0], images.ImageTooLarge)
    assert images.probe(big, max_pixels=10001 * 10001, upright=False) == images.ImageInfo(10001, 10001, 1)
    monkeypatch.undo()
    small = save(tmp_path / 'small.png', np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(images.ImageTooLarge):
        images.decode_file(small, max_pixels=199)
    assert images.decode_file(small, max_pixels=200).shape == (10, 20, 3)


def test_create_datasets_refuses_a_100_megapixel_png(ml_data, tmp_path):
    for part in ('train', 'test'):
        for c in ('a', 'b'):
            save(tmp_path / part / c / '1.png', np.zeros((4, 5, 3), np.uint8))
    big = grey_png(tmp_path / 'train' / 'b' / 'big.png', 10001, 10001)
    args = ['custom', '--name=big', f'--traindir={tmp_path / "train"}',
            f'--testdir={tmp_path / "test"}']
    start = time.time()
    result = assert_user_error(run_script(CREATE, *args, timeout=300), str(big),
                               '10001x10001', '--max_image_pixels')
    assert result.returncode == 2 and len(message_lines(result.stderr)) == 1, result.stderr
    assert time.time() - start < 120
    # The flag lowers (or raises) the limit.
    result = assert_user_error(run_script(CREATE, *args[:-1], f'--testdir={tmp_path / "test"}',
                                          '--max_image_pixels=19', timeout=300),
                               '5x4 = 20 pixels', '--max_image_pixels')
    assert len(message_lines(result.stderr)) == 1, result.stderr
    assert os.listdir(ml_data) == []
    # --skip_bad_images leaves it out.
    assert_ok(run_script(CREATE, *args, '--skip_bad_images', timeout=300))
    assert records.read_meta(str(ml_data / 'big-train.tfrecord'))['count'] == 2


# ----------------------------------------------------------------------------------------------
# FIFOs: only regular files are opened.

def test_a_fifo_named_png_never_blocks(tmp_path, ml_data):
    fifo = tmp_path / 'x.png'
    os.mkfifo(fifo)
    with pytest.raises(images.ImageError, match='not a regular file'):
        in_thread(lambda: images.decode_file(fifo))  # opened without blocking, then refused
    with pytest.raises(images.ImageError, match='not a regular file'):
        in_thread(lambda: images.probe(fifo))

    # create_datasets custom, through the script, with a FIFO in every folder.
    for part in ('train', 'test', 'unlabeled'):
        for c in ('cat', 'dog'):  # classes of the run of make_run
            save(tmp_path / part / c / '1.png', np.zeros((4, 5, 3), np.uint8))
        os.mkfifo(tmp_path / part / 'cat' / 'pipe.png')
    assert_ok(run_script(CREATE, 'custom', '--name=fifo', f'--traindir={tmp_path / "train"}',
                         f'--testdir={tmp_path / "test"}', f'--unlabeldir={tmp_path / "unlabeled"}',
                         timeout=120))
    assert records.read_meta(str(ml_data / 'fifo-train.tfrecord'))['count'] == 2

    # Inference.
    run = make_run(tmp_path / 'experiments', steps=(64,))
    result = in_thread(lambda: predict.run_inference(run, tmp_path / 'train', tmp_path / 'out',
                                                       progress=False))
    assert result['n'] == 2 and ('cat/pipe.png', folders.NOT_REGULAR) in result['skipped']


# ----------------------------------------------------------------------------------------------
# One decoder: the records of create_datasets and what inference feeds the model.

def messy_folder(root, rng):
    """train/{a,b}: every kind of image the decoder must agree on; returns the relative paths in
    the order both tools must list them."""
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[:2, :, 3] = 0      # fully transparent
    rgba[2:4, :, 3] = 128   # half
    save(root / 'a' / 'rgba.png', rgba)
    exif = Image.Exif()
    exif[0x0112] = 6
    save(root / 'a' / 'photo.jpg', rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), exif=exif)
    palette = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(
        'P', palette=Image.Palette.ADAPTIVE, colors=8)
    save(root / 'a' / 'img2.png', palette)
    save(root / 'a' / 'img10.png', palette, transparency=3)
    save(root / 'b' / 'grey16.png', (rng.integers(0, 65536, (8, 8))).astype(np.uint16))
    save(root / 'b' / 'la.png', rng.integers(0, 256, (8, 8, 2), dtype=np.uint8), 'LA')
    save(root / 'b' / 'odd.PNG', rng.integers(0, 256, (5, 7, 3), dtype=np.uint8))
    save(root / 'b' / 'deep' / 'Grey.png', rng.integers(0, 256, (8, 8), dtype=np.uint8), 'L')
    (root / 'b' / 'Thumbs.db').write_bytes(b'junk')
    os.mkfifo(root / 'b' / 'pipe.png')
    return ['a/img2.png', 'a/img10.png', 'a/photo.jpg', 'a/rgba.png',
            'b/deep/Grey.png', 'b/grey16.png', 'b/la.png', 'b/odd.PNG']


def record_pixels(path):
    """(uint8 [N, H, W, C], labels [N]) of a record file, its PNGs decoded by TensorFlow."""
    pixels, labels = [], []
    for batch in records.read_records(str(path)):
        pixels += [tf.io.decode_png(png).numpy() for png in batch['image']]
        labels += batch['label'].tolist()
    return np.stack(pixels), np.array(labels)


def test_training_and_prediction_see_identical_pixels(ml_data, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    order = messy_folder(tmp_path / 'train', rng)
    for c in 'ab':
        save(tmp_path / 'test' / c / 't.png', rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert_ok(run_script(CREATE, 'custom', '--name=trust', f'--traindir={tmp_path / "train"}',
                         f'--testdir={tmp_path / "test"}', '--img_size=8', timeout=300))
    stored, labels = record_pixels(ml_data / 'trust-train.tfrecord')
    meta = records.read_meta(str(ml_data / 'trust-train.tfrecord'))
    assert (meta['height'], meta['width'], meta['channels']) == (8, 8, 3)
    assert stored.shape == (len(order), 8, 8, 3)

    paths, folder_labels, names, skipped = predict.list_images(tmp_path / 'train', ['a', 'b'], 2)
    assert [os.path.relpath(p, tmp_path / 'train') for p in paths] == order
    assert folder_labels.tolist() == labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert dict(skipped) == {'b/Thumbs.db': folders.NOT_AN_IMAGE, 'b/pipe.png': folders.NOT_REGULAR}
    np.testing.assert_array_equal(predict.load_images(paths, 8, 8, 3), stored)

    # What predict_files hands the model, batch by batch.
    fed = []
    monkeypatch.setattr(predict, "probability_function", lambda *a, **k: (
        lambda x: fed.append(x.numpy()) or tf.zeros([tf.shape(x)[0], 2])))
    _, rows = predict.predict_files(None, paths, 8, 8, 3, batch_size=3, progress=False)
    assert rows.tolist() == list(range(len(order)))
    fed = np.concatenate(fed)
    assert fed.dtype == np.float32
    assert np.array_equal(fed.astype(np.uint8), stored) and np.array_equal(fed, stored)

    # The pixels are those of the documented steps (not just equal to each other).
    rgba = images.decode_file(tmp_path / 'train' / 'a' / 'rgba.png').astype(np.int64)
    on_white = (rgba[..., :3] * rgba[..., 3:] + 255 * (255 - rgba[..., 3:]) + 127) // 255
    np.testing.assert_array_equal(stored[order.index('a/rgba.png')], on_white)
    np.testing.assert_array_equal(stored[order.index('a/rgba.png')][:2], 255)
    photo = images.decode_file(tmp_path / 'train' / 'a' / 'photo.jpg')
    assert photo.shape == (10, 6, 3)  # upright, then resized to 8x8
    odd = images.decode_file(tmp_path / 'train' / 'b' / 'odd.PNG').astype(np.float32)
    resized = tf.image.resize(odd, [8, 8], 'bilinear', antialias=True).numpy()
    np.testing.assert_array_equal(stored[order.index('b/odd.PNG')],
                                  np.clip(np.round(resized), 0, 255))

    # A grey-only folder gives a 1-channel dataset, and the same agreement.
    grey_root = tmp_path / 'grey'
    for i, c in enumerate('ab'):
        save(grey_root / 'train' / c / f'{i}.png', rng.integers(0, 256, (6, 6), dtype=np.uint8), 'L')
        save(grey_root / 'train' / c / f'{i}_16.png', rng.integers(0, 65536, (6, 6)).astype(np.uint16))
        save(grey_root / 'train' / c / f'{i}_la.png', rng.integers(0, 256, (6, 6, 2), dtype=np.uint8), 'LA')
        save(grey_root / 'test' / c / 't.png', rng.integers(0, 256, (6, 6), dtype=np.uint8), 'L')
    custom.create_custom(str(ml_data), 'grey', str(grey_root / 'train'), str(grey_root / 'test'))
    stored, _ = record_pixels(ml_data / 'grey-train.tfrecord')
    assert stored.shape == (6, 6, 6, 1)
    paths = predict.list_images(grey_root / 'train', ['a', 'b'], 2)[0]
    np.testing.assert_array_equal(predict.load_images(paths, 6, 6, 1), stored)


# ----------------------------------------------------------------------------------------------
# Issue 10: outputs inside --inference_out (item 16), distinct folders (item 17).

@pytest.fixture(scope='module')
def run_and_images(tmp_path_factory):
    root = tmp_path_factory.mktemp('run')
    run = make_run(root / 'experiments', steps=(64,))
    save(root / 'images' / 'x.png', np.zeros((8, 8, 3), np.uint8))
    return run, root / 'images'


@pytest.mark.parametrize('name', ['../escape/x', '..', 'a/b', 'a\\b', 'x..y'])
def test_dataset_name_cannot_leave_the_output_folder(tmp_path, run_and_images, name):
    run, folder = run_and_images
    out = tmp_path / 'out' / 'inner'
    with pytest.raises(UserError, match=r'--dataset=.*may not') as e:
        predict.run_inference(run, folder, out, dataset_name=name, progress=False)
    assert '\n' not in str(e.value)
    assert not list(tmp_path.rglob('*_pred.*'))


def test_run_dataset_name_from_args_json_is_checked(tmp_path):
    run = make_run(tmp_path / 'experiments', steps=(64,))
    args_json = run / 'args' / 'args.json'
    args_json.write_text(args_json.read_text().replace('"toy.1@6-3"', '"../../evil"'))
    save(tmp_path / 'images' / 'x.png', np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match='args.json=../../evil: a dataset name may not'):
        predict.run_inference(run, tmp_path / 'images', tmp_path / 'out', progress=False)


def test_inference_command_user_errors(tmp_path, run_and_images):
    run, folder = run_and_images
    base = [REALMIX, '--perform_inference', f'--inference_dir={folder}', f'--inference_ckpt={run}',
            f'--inference_out={tmp_path / "out"}']
    result = assert_user_error(run_script(*base, '--dataset=../escape/x', '--max_image_pixels=10',
                                          cwd=tmp_path), '--dataset=../escape/x')
    assert result.returncode == 2 and len(message_lines(result.stderr)) == 1, result.stderr
    assert not (tmp_path / 'escape').exists() and not (tmp_path / 'out').exists()
    # The pixel limit of inference: the 8x8 image is above 10 pixels, so nothing is left.
    result = assert_user_error(run_script(*base, '--max_image_pixels=10', cwd=tmp_path),
                               'no PNG or JPEG images', 'x.png', '--max_image_pixels')
    assert len(message_lines(result.stderr)) == 1, result.stderr


@pytest.mark.parametrize('layout, words', [
    (dict(traindir='data/train', testdir='data/train'), ['--traindir', '--testdir', 'same folder']),
    (dict(traindir='data/train', testdir='link_to_train'), ['--traindir', '--testdir', 'same folder']),
    (dict(traindir='data/train', testdir='data/test', unlabeldir='data/train/u'),
     ['--unlabeldir=', 'inside --traindir=']),
    (dict(traindir='data/train', testdir='data/test', unlabeldir='data/test'),
     ['--testdir', '--unlabeldir', 'same folder']),
    (dict(traindir='data/test/train', testdir='data/test'), ['--traindir=', 'inside --testdir=']),
    (dict(traindir='data/train', testdir='data/train/test'), ['--testdir=', 'inside --traindir=']),
    (dict(traindir='data/train', testdir='data/test', unlabeldir='data'),
     ['--traindir=', 'inside --unlabeldir=']),
])
def test_custom_folders_must_be_distinct(ml_data, tmp_path, layout, words):
    for part in ('data/train', 'data/test', 'data/test/train', 'data/train/test', 'data/train/u'):
        for c in ('a', 'b'):
            save(tmp_path / part / c / '1.png', np.zeros((4, 4, 3), np.uint8))
    os.symlink(tmp_path / 'data' / 'train', tmp_path / 'link_to_train')
    folders = {k: str(tmp_path / v) for k, v in layout.items()}
    with pytest.raises(UserError) as e:
        custom.create_custom(str(ml_data), 'x', folders['traindir'], folders['testdir'],
                         folders.get('unlabeldir'))
    for word in words:
        assert word in str(e.value), str(e.value)
    assert os.listdir(ml_data) == []


def test_custom_same_folders_command_is_one_line(ml_data, tmp_path):
    for c in ('a', 'b'):
        save(tmp_path / 'train' / c / '1.png', np.zeros((4, 4, 3), np.uint8))
    result = assert_user_error(run_script(CREATE, 'custom', '--name=x', '--traindir',
                                          tmp_path / 'train', '--testdir', f'{tmp_path}/train/',
                                          timeout=120), '--traindir', '--testdir', 'same folder')
    assert result.returncode == 2 and len(message_lines(result.stderr)) == 1, result.stderr
    assert os.listdir(ml_data) == []

"""Record files written from chunks of images, and the lines create_datasets.py prints.

A chunk is (images uint8 [n, H, W, C], labels int64 [n]); files are written atomically by
records.RecordWriter (complete, or not at all) with a tqdm bar counting images.
"""
import os

from tqdm import tqdm

from libml import names, records

# Images encoded and written per step: bounds memory for the big streamed files (SVHN extra,
# STL-10 unlabeled) while keeping TensorFlow's per-call overhead negligible. Read at call time
# (output.CHUNK), so tests can make it small.
CHUNK = 2048


def fill(writer, chunks, total=None):
    """Writes (images [N, H, W, C] uint8, labels [N]) chunks into an open RecordWriter."""
    with tqdm(total=total, desc=os.path.basename(writer.path), unit='img', leave=False) as bar:
        for images, labels in chunks:
            if images.shape[1:] != writer.shape:  # a bug or a damaged file: never write it
                raise ValueError(f'image shape {images.shape[1:]} != {writer.shape}')
            for png, label in zip(records.encode_png(images), labels):
                writer.write(png, label)
            bar.update(len(labels))
    return writer.count


def write_records(path, chunks, shape, class_names, total=None):
    """Writes a record file (atomically) from chunks of images; returns its record count."""
    with records.RecordWriter(path, shape, class_names=class_names) as writer:
        fill(writer, chunks, total)
    return writer.count


def in_chunks(images, labels):
    """Slices in-memory arrays into chunks of CHUNK images (views: no copy)."""
    for start in range(0, len(images), CHUNK):
        yield images[start:start + CHUNK], labels[start:start + CHUNK]


def write_part(name, part, root, images, labels, shape, class_names):
    """Writes in-memory images [N, *shape] and labels [N] as $ML_DATA/{name}-{part}.tfrecord;
    returns the line that says so."""
    path = names.record_path(name, part, root)
    return records_line(path, write_records(path, in_chunks(images, labels), shape, class_names,
                                            len(labels)))


def records_line(path, count):
    return f'wrote {path}: {count} records'


def write_mapping(name, class_names, root):
    """Writes {name}_class_mappings.json; returns the line that says so."""
    path = names.write_class_mapping(name, class_names, root)
    return f'wrote {path}: {len(class_names)} classes'

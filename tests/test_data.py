"""libml/names.py and libml/records.py: the name grammar, derived datasets, the record format and atomic writing."""
import os

import numpy as np
import pytest

from conftest import make_images, make_ssl_dataset, write_records

from libml import names, records
from libml.utils import UserError


def test_name_grammar():
    assert names.parse_ssl_name('cifar10_aug50.3@450-50') == names.SplitName('cifar10_aug50', 3, 450, 50)
    assert str(names.parse_ssl_name('digits.12@7-0')) == 'digits.12@7-0'
    assert names.parse_split_name('cifar10.1@250').stem == 'cifar10.1@250'
    assert names.parse_supervised_name('mydataset-50') == ('mydataset', 50)
    for bad in ('cifar10.1@250', 'cifar-10.1@250-5', 'cifar10.x@250-5', ''):
        with pytest.raises(UserError, match='NAME.SEED@SIZE-VALID'):
            names.parse_ssl_name(bad)
    with pytest.raises(UserError, match='NAME-VALID'):
        names.parse_supervised_name('my-data-50')
    for bad in ('my-data', 'my.data', 'a b', ''):
        with pytest.raises(UserError, match='--name'):
            names.check_name(bad)


def test_lineage_of_derived_datasets():
    assert names.lineage('cifar6_mismatch50_aug2') == ['cifar6_mismatch50_aug2', 'cifar6_mismatch50', 'cifar6']
    assert names.base_name('cifar10_aug50') == 'cifar10'
    assert names.base_name('my_aug_data') == 'my_aug_data'


def test_derived_split_uses_its_base_label_and_test_files(ml_data):
    make_ssl_dataset(str(ml_data), name='cifar6')
    split = names.parse_split_name('cifar6_mismatch50.1@12')
    assert names.find_label_file(split) == names.split_path('cifar6.1@12', 'label')
    assert names.find_test_file('cifar6_mismatch50_aug2') == names.record_path('cifar6', 'test')
    with pytest.raises(UserError, match='other.1@12-label.tfrecord does not exist'):
        names.find_label_file(names.parse_split_name('other.1@12'))


def test_records_round_trip_with_metadata(ml_data):
    images, labels = make_images(7, (8, 8, 3), nclass=2)
    path = write_records(str(ml_data / 'x-train.tfrecord'), images, labels, 2, ['a', 'b'],
                         sources=[5, 4, 3, 2, 1, 0, 9])
    meta = records.read_meta(path)
    assert (meta['count'], meta['height'], meta['width'], meta['channels']) == (7, 8, 8, 3)
    assert meta['class_names'] == ['a', 'b'] and meta['label_counts'] == {'0': 4, '1': 3}
    batch = next(records.read_records(path))
    np.testing.assert_array_equal(batch['label'], labels)
    np.testing.assert_array_equal(batch['source'], [5, 4, 3, 2, 1, 0, 9])
    import tensorflow as tf
    np.testing.assert_array_equal(tf.io.decode_png(batch['image'][3]).numpy(), images[3])


def test_writer_leaves_nothing_when_interrupted(ml_data):
    path = str(ml_data / 'y-train.tfrecord')
    with pytest.raises(KeyboardInterrupt):
        with records.RecordWriter(path, (8, 8, 1), nclass=2) as w:
            w.write(records.encode_png(np.zeros((1, 8, 8, 1), np.uint8))[0], 0)
            raise KeyboardInterrupt
    assert os.listdir(ml_data) == []


def test_ml_data_defaults_to_local_data(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv('ML_DATA', raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr('libml.utils._warned_ml_data', False)
    from libml.utils import ml_data
    assert ml_data() == str(tmp_path / 'data')
    assert ml_data() == str(tmp_path / 'data')
    assert capsys.readouterr().err.count('ML_DATA is not set') == 1

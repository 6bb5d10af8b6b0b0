"""digits: the 1,797 handwritten digits shipped inside scikit-learn, so the project can be tried
before anything is downloaded.

Reads sklearn.datasets.load_digits(): images float [1797, 8, 8] with values 0..16, targets 0..9.
Writes digits-train (1,297 images) and digits-test (500), 8x8 grey, each value v stored as the
uint8 floor(v * 255 / 16 + 0.5); and digits_class_mappings.json ("0".."9"). The test set is
stratified: class c gets its share 500 * n_c / 1797, rounded by largest remainder (ties to the
lower class), and takes the first images of class c met in the order
numpy.random.RandomState(0).permutation(1797). Records keep load_digits order.
"""
import numpy as np

from libml.sources import output

DIGITS_TEST_SIZE = 500


def digits_test_mask(labels, test_size=DIGITS_TEST_SIZE, seed=0):
    """The documented stratified split: True for the test images (see the module doc)."""
    counts = np.bincount(labels)
    exact = test_size * counts / len(labels)
    quota = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - quota), kind='stable')
    quota[by_remainder[:test_size - quota.sum()]] += 1
    mask = np.zeros(len(labels), bool)
    for i in np.random.RandomState(seed).permutation(len(labels)):
        if quota[labels[i]]:
            quota[labels[i]] -= 1
            mask[i] = True
    return mask


def create_digits(root, archive_dir=None):
    from sklearn.datasets import load_digits  # slow to import; only this subset needs it

    digits = load_digits()
    images = np.floor(digits.images * 255 / 16 + 0.5).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    test = digits_test_mask(labels)
    names = [str(d) for d in range(10)]
    lines = [output.write_part('digits', part, root, images[mask], labels[mask], (8, 8, 1), names)
             for part, mask in (('train', ~test), ('test', test))]
    return lines + [output.write_mapping('digits', names, root)]

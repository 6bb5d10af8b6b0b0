"""The public archives: canonical file names, URLs and published MD5s, and getting one.

An archive found in the archive folder under its canonical name is used as it is. A missing one
is downloaded from its URL to a temporary name, with a tqdm progress bar, and takes its canonical
name only when its MD5 is the published one; otherwise nothing is kept.
"""
import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request

from absl import logging
from tqdm import tqdm

from libml import files
from libml.utils import UserError


@dataclasses.dataclass(frozen=True)
class Archive:
    url: str
    md5: str


ARCHIVES = {
    'cifar-10-python.tar.gz': Archive('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                                      'c58f30108f718f92721af3b95e74349a'),
    'cifar-100-python.tar.gz': Archive('https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz',
                                       'eb9058c3a382ffc7106e4002c42a8d85'),
    'train_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/train_32x32.mat',
                               'e26dedcc434d2e4c54c9b2d4a06d8373'),
    'test_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/test_32x32.mat',
                              'eb5a983be6a315427106f1b164d9cef3'),
    'extra_32x32.mat': Archive('http://ufldl.stanford.edu/housenumbers/extra_32x32.mat',
                               'a93ce644f1a588dc4d68dda5feec44a7'),
    'stl10_binary.tar.gz': Archive('http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz',
                                   '91f7769df0f17e558f3565bffb0c7dfb'),
}


def archive(filename, archive_dir):
    """Path of a public archive in `archive_dir`, downloading it first when it is missing."""
    path = os.path.join(archive_dir, filename)
    if not os.path.exists(path):
        download(ARCHIVES[filename], path)
    return path


def download(source, path):
    """Downloads `source.url` to `path` through a temporary name, checking its MD5."""
    logging.info('%s is missing: downloading %s', path, source.url)
    hint = f'download {source.url} by hand to {path}, or run again.'
    with files.atomic_output(path) as tmp:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(source.url, timeout=60) as response, \
                    open(tmp, 'wb') as out:
                length = response.headers.get('Content-Length')
                with tqdm(total=int(length) if length else None, unit='B', unit_scale=True,
                          desc=os.path.basename(path), leave=False) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = getattr(e, 'reason', None) or e
            raise UserError(f'cannot download {source.url} ({reason}); {hint}') from None
        if digest.hexdigest() != source.md5:
            raise UserError(f'{source.url} arrived damaged (MD5 {digest.hexdigest()}, expected '
                            f'{source.md5}); nothing was kept: {hint}')


def replace_hint(path):
    """What to do about a damaged archive `path`: fetch it again from its URL."""
    source = ARCHIVES.get(os.path.basename(path))
    return f'delete it to download it again from {source.url}' if source else 'replace it'

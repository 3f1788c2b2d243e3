# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replacing a file so that a reader sees the old or the new one, never a part of the new one.

The text goes to a temporary file in the same directory, is fsync'ed and renamed over the old
file with os.replace() (rename(2) is atomic within a file system); then the directory is
fsync'ed so the rename survives a crash. Used for the fleet report (controller) and for UFW's
rules files (targets). Python 3.8+, standard library only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

TEMP_PREFIX = ".sipguard-"
TEMP_SUFFIX = ".tmp"
_CHUNK = 1 << 20


def _write_all(fh, chunks):
    """Write the chunks (text, or bytes as they are) to the binary file ``fh``; a seam for the
    kill-mid-write test."""
    for chunk in chunks:
        fh.write(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8"))


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def atomic_write(path, chunks, mode=0o644, owner=None):
    """Replace ``path`` with the ``chunks`` (a str or bytes, or an iterable of them).

    ``mode`` and ``owner`` (``(uid, gid)``) are set on the new file before it takes the old one's place.
    """
    if isinstance(chunks, (str, bytes)):
        chunks = [chunks]
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX + os.path.basename(path) + ".", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        with os.fdopen(fd, "wb", _CHUNK) as fh:
            _write_all(fh, chunks)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)

"""Make the collection importable as ansible_collections.mxedge.matrix in unit tests.

scripts/bootstrap.sh links .cache/collections/ansible_collections/mxedge/matrix to the
checkout. Inside a real ansible_collections/mxedge/matrix tree (ansible-test, an
installed collection) the directory above ansible_collections is used instead.
"""

import os
import sys
import tempfile

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collections_dir():
    parts = _ROOT.split(os.sep)
    if len(parts) >= 3 and parts[-3:-1] == ["ansible_collections", "mxedge"] and parts[-1] == "matrix":
        return os.sep.join(parts[:-3]) or os.sep
    cached = os.path.join(_ROOT, ".cache", "collections")
    if os.path.isdir(os.path.join(cached, "ansible_collections", "mxedge", "matrix", "plugins")):
        return cached
    # No bootstrap yet: a throw-away tree whose only entry links to the checkout.
    temp = tempfile.mkdtemp(prefix="mxedge-unit-")
    os.makedirs(os.path.join(temp, "ansible_collections", "mxedge"))
    os.symlink(_ROOT, os.path.join(temp, "ansible_collections", "mxedge", "matrix"))
    return temp


_DIR = _collections_dir()
if _DIR not in sys.path:
    sys.path.insert(0, _DIR)

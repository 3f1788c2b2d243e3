"""Make ``ansible_collections.sipguard.firewall`` importable from this checkout or installed copy."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COLLECTION = os.path.dirname(HERE)
_parts = COLLECTION.split(os.sep)
if _parts[-3:-2] == ["ansible_collections"]:
    ROOT = os.sep.join(_parts[:-3])  # an installed copy: .../ansible_collections/sipguard/firewall
else:
    # A plain checkout: a symlink tree so the collection imports under its FQCN.
    ROOT = os.path.join(COLLECTION, "build", "pytest-collections")
    link = os.path.join(ROOT, "ansible_collections", "sipguard", "firewall")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(COLLECTION, link)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

"""seqops: learn from user-behaviour sequences and serve what is learned.

`seqops.features`, `.models`, `.serving` and `.flows` live in the top-level folders of the
repository (pyproject.toml's package-dir). The editable install links them under one tree that IDEs
and pyright follow; when Python finds this folder first instead (run from the repository root), the
repository root is added to the package path so the subpackages are found the same way.
"""

import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.realpath(__file__)))
if _os.path.isfile(_os.path.join(_ROOT, "features", "__init__.py")) and _ROOT not in __path__:
    __path__.append(_ROOT)

"""Print the requirements of the project (core + the named extras) from pyproject.toml, one per
line, without installing the project: the images install these in a layer of their own, which
then changes only when the dependencies do.

  python3 hack/requirements.py [PYPROJECT] [EXTRA ...]
"""

import sys
import tomllib

path, *extras = sys.argv[1:] or ["pyproject.toml"]
with open(path, "rb") as f:
    project = tomllib.load(f)["project"]
requirements = list(project["dependencies"])
for extra in extras:
    requirements += project["optional-dependencies"][extra]
print("\n".join(dict.fromkeys(requirements)))

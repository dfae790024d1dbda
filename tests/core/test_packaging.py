"""Every package in the tree is listed in pyproject.toml, so a wheel (not only an editable
install) carries it: the package list is explicit because models/ and experiments/ install
under the jinterp namespace."""

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALLED_AS = {"jinterp": "jinterp", "models": "jinterp.models",
                "experiments": "jinterp.experiments"}


def test_every_package_directory_is_declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        declared = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in INSTALLED_AS.items():
        for folder, _, files in os.walk(os.path.join(ROOT, top)):
            if "__init__.py" in files:
                rel = os.path.relpath(folder, os.path.join(ROOT, top))
                found.add(name if rel == "." else f"{name}.{rel.replace(os.sep, '.')}")
    assert found - declared == set(), f"add to [tool.setuptools] packages: {found - declared}"

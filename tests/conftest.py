"""Session-wide settings for every test run."""

from __future__ import annotations

import shutil
import tempfile

import pytest

OWN_BASETEMP = pytest.StashKey[str]()  # the base this session made (and removes)


def pytest_configure(config: pytest.Config) -> None:
    # pytest's default base (/tmp/pytest-of-USER/pytest-N) keeps only the newest three runs:
    # a second session on the same machine would delete a running one's files (its built
    # fleet.pyz, ssh keys, git work trees). A private base per session cannot collide.
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="fleet-pytest-")
        config.stash[OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    own = config.stash.get(OWN_BASETEMP, None)
    if own:
        shutil.rmtree(own, ignore_errors=True)


"""DVC tracking errors say why (``components/platform/versioning.py``), with the real dvc CLI."""

import subprocess
import sys

import pytest

from alignflow.components.platform.versioning import VersioningError, track


def test_tracking_a_git_ignored_file_fails_naming_the_cause(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("state/\n")
    (tmp_path / "state").mkdir()
    ignored = tmp_path / "state" / "metrics.json"
    ignored.write_text("{}")
    with pytest.raises(VersioningError, match="git-ignored"):
        track([ignored], tmp_path)
    kept = tmp_path / "metrics.json"
    kept.write_text("{}")
    assert set(track([kept], tmp_path)) == {str(kept)}

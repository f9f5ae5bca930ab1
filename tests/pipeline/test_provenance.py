"""A run records vant's own commit, never that of a repository an installed vant sits in."""
import json
import subprocess
import sys

import pytest

from vant.pipeline import provenance


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def make_repo(path, project: str | None):
    """A git repository at ``path`` with a package dir ``vant/`` and, if ``project``, a pyproject naming it."""
    (path / "vant").mkdir(parents=True)
    (path / "vant" / "__init__.py").write_text("")
    if project is not None:
        (path / "pyproject.toml").write_text(f'[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "{project}"\n'
                                             'version = "1"\n\n[tool.x]\nname = "vant"\n')
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return git(path, "rev-parse", "HEAD")


class FakeDist:
    def __init__(self, version, direct_url):
        self.version, self._direct = version, direct_url

    def read_text(self, name):
        return json.dumps(self._direct) if name == "direct_url.json" and self._direct is not None else None


def test_a_checkout_of_vant_records_its_commit_and_dirty_flag(tmp_path):
    head = make_repo(tmp_path, "vant")
    assert provenance.source(tmp_path / "vant") == {"git_commit": head}
    (tmp_path / "vant" / "__init__.py").write_text("x = 1\n")  # a tracked file changed
    assert provenance.source(tmp_path / "vant") == {"git_commit": head + "-dirty"}


@pytest.mark.parametrize("project", ["someone-elses-app", None])
def test_vant_inside_another_repository_records_the_installed_distribution(tmp_path, monkeypatch, project):
    make_repo(tmp_path, project)  # e.g. a virtual environment inside a user's project
    monkeypatch.setattr(provenance.metadata, "distribution", lambda name: FakeDist("0.1.0", None))
    assert provenance.source(tmp_path / "vant") == {"vant_dist": "0.1.0"}
    url = {"url": "https://example.org/vant.git", "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}}
    monkeypatch.setattr(provenance.metadata, "distribution", lambda name: FakeDist("0.1.0", url))
    assert provenance.source(tmp_path / "vant") == {"vant_dist": "0.1.0", "vant_vcs_commit": "ab" * 20,
                                                    "vant_vcs_url": "https://example.org/vant.git"}


def test_outside_any_repository_with_no_distribution_records_nothing(tmp_path, monkeypatch):
    (tmp_path / "vant").mkdir()

    def missing(name):
        raise provenance.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provenance.metadata, "distribution", missing)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path counts
    assert provenance.source(tmp_path / "vant") == {}


def test_project_name_is_read_without_tomllib_too(tmp_path):
    """Python 3.10 has no tomllib: the [project] name is read from the table itself."""
    f = tmp_path / "pyproject.toml"
    f.write_text('[tool.other]\nname = "vant"\n\n[project]\ndescription = "x"\nname = "not-vant"\n\n[tool.y]\nname = "vant"\n')
    code = ("import sys; sys.modules['tomllib'] = None\n"
            "from pathlib import Path\nfrom vant.pipeline.provenance import project_name\n"
            f"print(project_name(Path({str(f)!r})))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "not-vant", r.stderr
    assert provenance.project_name(f) == "not-vant"
    assert provenance.project_name(tmp_path / "missing.toml") is None

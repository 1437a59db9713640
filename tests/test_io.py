"""``moepot.io``: atomic writes, and output paths that cannot be written named in one line."""

from __future__ import annotations

import pytest

from moepot.errors import MoepotError, OutputError
from moepot.io import atomic_path, make_dirs


def test_atomic_path_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_writing_onto_a_directory_is_an_output_error_and_leaves_it_alone(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "kept.txt").write_text("x")
    with pytest.raises(OutputError, match=r"cannot write .*d: it is a directory"), atomic_path(tmp_path / "d") as tmp:
        tmp.write_text("never")
    assert (tmp_path / "d" / "kept.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


@pytest.mark.parametrize("depth", [1, 3])
def test_a_file_where_a_folder_is_needed_is_named(tmp_path, depth):
    blocker = tmp_path / "catalog.yaml"
    blocker.write_text("x")
    target = blocker.joinpath(*["sub"] * (depth - 1), "out.hdf5")
    with pytest.raises(OutputError) as info, atomic_path(target):
        pass
    error = info.value
    assert isinstance(error, MoepotError) and isinstance(error, OSError)  # one CLI line; OSError handlers still see it
    assert str(target) in str(error) and f"{blocker} is a file, not a directory" in str(error)
    assert "\n" not in str(error) and "Errno" not in str(error)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        make_dirs(target.parent)
    assert blocker.read_text() == "x"


def test_check_directory_possible_creates_nothing(tmp_path):
    from moepot.io import check_directory_possible

    assert check_directory_possible(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    for target in (tmp_path / "f", tmp_path / "f" / "g" / "h"):
        with pytest.raises(OutputError, match=f"{tmp_path / 'f'} is a file, not a directory"):
            check_directory_possible(target)


def test_atomic_file_gets_the_permissions_of_a_plain_open(tmp_path):
    """mkstemp makes 0600 files; the renamed file must have what open() gives under the umask."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        with open(tmp_path / "b.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o644

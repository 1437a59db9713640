"""``moepot.yamlio``: YAML that refuses a key given twice, and one-line YAML errors."""

from __future__ import annotations

import pytest
import yaml

from moepot import yamlio


@pytest.mark.parametrize("loader", [yamlio.UniqueKeySafeLoader, yamlio.FAST_LOADER])
def test_a_repeated_key_is_an_error_marked_at_its_second_occurrence(loader):
    text = "a: 1\nb:\n  c: 2\n  c: 3\n"
    with pytest.raises(yaml.constructor.ConstructorError) as info:
        yaml.load(text, Loader=loader)  # noqa: S506
    assert info.value.problem_mark.line == 3  # 0-based: the second c
    assert yamlio.describe_error(info.value) == "at line 4, column 3: found duplicate key 'c' (first given at line 3)"


def test_plain_documents_and_merge_keys_load_as_with_safe_load():
    text = "base: &b {lr: 0.1, width: 8}\nrun:\n  <<: *b\n  lr: 0.2\nlist: [1, {x: 2}]\n"
    assert yamlio.safe_load(text) == yaml.safe_load(text)
    assert yamlio.safe_load(text)["run"] == {"lr": 0.2, "width": 8}  # a merge may be overridden
    assert yamlio.safe_load("") is None
    assert yamlio.safe_load("1: a\n'1': b\n") == {1: "a", "1": "b"}  # different keys


def test_describe_error_is_one_line():
    with pytest.raises(yaml.YAMLError) as info:
        yamlio.safe_load("a: [1,\n")
    text = yamlio.describe_error(info.value)
    assert text.startswith("at line ") and "\n" not in text

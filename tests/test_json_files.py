"""`tfprune.json_files.save_json`: whole files or none."""

import json
import os

import pytest

from tfprune.json_files import save_json


def test_writes_and_replaces_whole_files(tmp_path):
    path = tmp_path / "plan.json"
    save_json(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    save_json(str(path), {"c": 3}, indent=1)
    assert json.loads(path.read_text()) == {"c": 3}
    assert os.listdir(tmp_path) == ["plan.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "plan.json"
    save_json(path, {"kept": True})
    with pytest.raises(TypeError):
        save_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["plan.json"]

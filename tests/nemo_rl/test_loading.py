"""gymray.nemo_rl.loading: NeMo RL's YAML loading (``defaults:`` chains, ``_override_``)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from gymray.errors import ConfigError
from gymray.nemo_rl.loading import load_with_defaults


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_resolve_relative_to_each_file_and_the_child_wins(tmp_path):
    write(tmp_path / "base" / "grand.yaml", "a: 1\nb: {x: 1, y: 1}\n")
    write(tmp_path / "base" / "parent.yaml", "defaults: grand.yaml\nb: {y: 2}\nc: 2\n")
    child = write(tmp_path / "exp" / "child.yaml", "defaults: ../base/parent.yaml\nc: 3\n")
    cfg = OmegaConf.to_container(load_with_defaults(child))
    assert cfg == {"a": 1, "b": {"x": 1, "y": 2}, "c": 3}  # no `defaults` key left


def test_a_list_of_defaults_merges_later_over_earlier(tmp_path):
    write(tmp_path / "one.yaml", "k: 1\nonly_one: 1\n")
    write(tmp_path / "two.yaml", "k: 2\n")
    child = write(tmp_path / "c.yaml", "defaults: [one.yaml, two.yaml]\n")
    assert OmegaConf.to_container(load_with_defaults(child)) == {"k": 2, "only_one": 1}


def test_override_replaces_the_parents_mapping_instead_of_merging(tmp_path):
    write(tmp_path / "p.yaml", "data: {train: {split: validation, path: a}}\n")
    child = write(
        tmp_path / "c.yaml", "defaults: p.yaml\ndata:\n  _override_: true\n  train: {path: b}\n"
    )
    assert OmegaConf.to_container(load_with_defaults(child)) == {"data": {"train": {"path": "b"}}}


def test_cycles_missing_parents_and_non_mappings_are_config_errors(tmp_path):
    a = write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_with_defaults(a)
    orphan = write(tmp_path / "o.yaml", "defaults: gone.yaml\n")
    with pytest.raises(ConfigError, match=r"gone.yaml \(a default of .*o.yaml\) does not exist"):
        load_with_defaults(orphan)
    with pytest.raises(ConfigError, match="not a mapping"):
        load_with_defaults(write(tmp_path / "l.yaml", "- 1\n- 2\n"))

"""Configs: defaults, overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.errors import UserError
from experiments.config import DEFAULTS, load_config

CONFIGS = sorted((Path(__file__).parents[1] / "experiments" / "configs").glob("*.yaml"))


def cfg(tmp_path, data: dict, *overrides):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, list(overrides))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config["stream"] and config["strategy"]["name"]


def test_defaults_fill_everything(tmp_path):
    c = cfg(tmp_path, {"train": {"epochs": 2}})
    assert c["train"]["epochs"] == 2
    assert c["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert [e["name"] for e in c["stream"]] == ["EVA", "AVA"]
    assert c["stream"][0]["labels"] is None


def test_typo_lists_valid_keys(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'train.epoch'; valid keys under "
                                        r"train: \['amp', 'batch_size', 'device', 'epochs'"):
        cfg(tmp_path, {"train": {"epoch": 2}})
    with pytest.raises(UserError, match="unknown key 'lables' in stream entry 0"):
        cfg(tmp_path, {"stream": [{"name": "A", "format": "ava", "root": "x", "lables": "y"}]})


def test_overrides(tmp_path):
    c = cfg(tmp_path, {}, "train.epochs=3", "strategy.name=ewc", "strategy.ewc_lambda=5",
            "stream.AVA.root=/data/AVA", "stream.0.labels=v.csv", "data.crop_scale=[0.3, 1]")
    assert c["train"]["epochs"] == 3
    assert c["strategy"] == {"name": "ewc", "ewc_lambda": 5}
    assert c["stream"][1]["root"] == "/data/AVA"
    assert c["stream"][0]["labels"] == "v.csv"
    assert c["data"]["crop_scale"] == [0.3, 1]
    assert cfg(tmp_path, {}, "train.lr=1e-4")["train"]["lr"] == 1e-4  # YAML says '1e-4' is str
    with pytest.raises(UserError, match="unknown config key 'train.epoks'"):
        cfg(tmp_path, {}, "train.epoks=3")
    with pytest.raises(UserError, match="no stream entry with index or name 'KonIQ'"):
        cfg(tmp_path, {}, "stream.KonIQ.root=/x")


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", "'train.epochs' must be at least 1"),
    ("train.epochs=two", "'train.epochs' = 'two': expected a value like 5"),
    ("data.test_fraction=1.5", "'data.test_fraction' must be in \\(0, 1\\)"),
    ("model.pretrained=yes please", "expected a value like True"),
    ("stream=[]", "'stream' needs at least one dataset entry"),
    ("eval.plcc_fit=cubic", "'eval.plcc_fit' must be 'none' or 'logistic'"),
])
def test_impossible_values(tmp_path, override, message):
    with pytest.raises(UserError, match=message):
        cfg(tmp_path, {}, override)


def test_stream_entry_mapping_keys_and_bad_yaml_values_on_the_command_line():
    from experiments.config import load_config

    demo = "experiments/configs/demo_biqa.yaml"
    c = load_config(demo, ["stream.LIVE.splits.train=splits2/{k}/live_train_score.txt",
                           "stream.LIVE.splits.test=splits2/{k}/live_test.txt"])
    assert c["stream"][0]["splits"] == {"train": "splits2/{k}/live_train_score.txt",
                                        "test": "splits2/{k}/live_test.txt"}
    with pytest.raises(UserError, match="not valid YAML .*quote it"):
        load_config(demo, ["stream.LIVE.splits={train: a/{k}.txt}"])

"""Config: typed sections, defaults, errors naming the key, the effective config saved."""

from __future__ import annotations

import pytest
import tomllib

from pipeline.core.config import Config, config_from_dict, load_config, save_config, to_toml
from pipeline.core.errors import PipelineError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg == Config()
    assert cfg.train.learning_rate == 3e-4 and cfg.train.lr_schedule == "constant"
    path = save_config(cfg, tmp_path)
    assert config_from_dict(tomllib.loads(path.read_text())) == cfg


def test_file_then_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('seed = 3\n[data]\ndataset = "digits"\n[train]\nepochs = 5\nlearning_rate = 1\n')
    cfg = load_config(path, {"seed": 7, "data.dataset": None})
    assert cfg.seed == 7 and cfg.data.dataset == "digits" and cfg.train.epochs == 5
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nepoch = 3\n", "[train] unknown key 'epoch'"),
        ("[training]\nepochs = 3\n", "unknown section or key 'training'"),
        ("[train]\nepochs = 3.5\n", "[train] epochs: expected int, got float 3.5"),
        ("[train]\nepochs = true\n", "[train] epochs: expected int, got bool"),
        ("[train]\nseparable = 1\n", "[train] separable: expected bool"),
        ("[split]\nstrategy = \"kfold\"\n", "[split] strategy: expected 'auto' or 'group' or 'time' or 'random'"),
        ("[split]\ntest_size = 1.5\n", "[split] test_size: expected a share between 0 and 1"),
        ("[quantize]\nboard = \"uno\"\n", "[quantize] board: unknown board 'uno'"),
        ("[device]\nchunk_size = 20\n", "[device] chunk_size: expected a positive multiple of 16"),
        ("seed = \"x\"\n", "seed: expected int"),
        ("train = 3\n", "[train]: expected a table"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        load_config(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(PipelineError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_fast_config_is_valid():
    from tinyml_cli import FAST_CONFIG

    cfg = load_config(FAST_CONFIG)
    assert cfg.train.trials <= Config().train.trials
    assert "[train]" in to_toml(cfg)

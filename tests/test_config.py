"""Config: typed sections, defaults, errors naming the key, the effective config saved."""

from __future__ import annotations

import pytest
import tomllib

from pipeline.core.config import Config, config_from_dict, load_config, save_config, to_toml
from pipeline.core.errors import PipelineError


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config()
    assert cfg == Config()
    assert cfg.train.learning_rate == 3e-3 and cfg.train.lr_schedule == "cosine"
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


def test_every_key_has_its_comment_where_it_is_defined():
    from pipeline.core.config_docs import undocumented

    assert undocumented() == []


def test_search_space_is_one_table_with_documented_defaults(tmp_path):
    from pipeline.core.config import SearchSpace

    cfg = load_config()
    assert cfg.train.search_space == SearchSpace()
    text = to_toml(cfg)
    assert "[train.search_space]" in text and "search_lr_min" not in text and "overfit_steps" not in text.split("[train.search_space]")[0]
    fast = load_config(__import__("tinyml_cli").FAST_CONFIG)
    assert (fast.train.search_space.lr_min, fast.train.search_space.overfit_steps) == (0.001, 100)
    over = load_config(None, {"train.search_space.width_max": 8})
    assert over.train.search_space.width_max == 8


def test_old_flat_keys_still_load_into_the_search_space(tmp_path):
    path = tmp_path / "old.toml"  # what a run directory's config.toml held before the move
    path.write_text("[train]\nsearch_lr_min = 0.002\nsearch_width_max = 8\noverfit_steps = 90\n"
                    "overfit_max_loss = 0.1\nepochs = 5\n")
    cfg = load_config(path)
    sp = cfg.train.search_space
    assert (sp.lr_min, sp.width_max, sp.overfit_steps, sp.overfit_max_loss, cfg.train.epochs) == (0.002, 8, 90, 0.1, 5)
    assert config_from_dict(tomllib.loads(to_toml(cfg))) == cfg


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nsearch_lr_min = 0.002\n[train.search_space]\nlr_min = 0.001\n",
         "[train] search_lr_min: also set as [train.search_space] lr_min"),
        ("[train.search_space]\nwidth_min = 20\n", "[train.search_space] width_min = 20 is above width_max = 12"),
        ("[train.search_space]\nlr_min = 0\n", "[train.search_space] lr_min: expected a number > 0"),
        ("[train.search_space]\nwidthmin = 2\n", "[train.search_space] unknown key 'widthmin'"),
        ("[train]\nsearch_space = 3\n", "[train.search_space]: expected a table"),
        ("[train]\nsearch_dropout_max = 1.0\n", "[train.search_space] dropout_max: expected 0 <= value < 1"),
    ],
)
def test_bad_search_space_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PipelineError) as err:
        load_config(path)
    assert message in str(err.value)

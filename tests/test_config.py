"""textclf.toml: every key and type checked at load time, with the key's name in the error;
the run's Params leave unset values to the configuration. No database needed."""

from __future__ import annotations

import pytest

from tasks.candidates import KINDS
from tasks.candidates.bert import BertConfig
from tasks.candidates.tfidf import TfidfConfig
from tasks.config import ConfigError, SplitOptions, load_settings
from tasks.pipeline import RunOptions


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    path = tmp_path / "textclf.toml"
    monkeypatch.setenv("TEXTCLF_CONFIG", str(path))
    monkeypatch.setenv("TEXTCLF_HOME", str(tmp_path / "home"))

    def write(text: str):
        path.write_text(text)
        return load_settings()

    return write


def test_kind_tables_become_typed_configs(config_file):
    settings = config_file('candidates = ["tfidf"]\n[tfidf]\nalphas = [0.0003, 1]\n'
                           'word_ngram_range = [1, 3]\n[bert]\nepochs = 2\n')
    assert settings.candidates == ("tfidf",)
    tfidf = settings.candidate_config("tfidf")
    assert isinstance(tfidf, TfidfConfig)
    assert tfidf.alphas == (0.0003, 1.0) and tfidf.word_ngram_range == (1, 3)
    assert settings.candidate_config("bert") == BertConfig(epochs=2.0)
    assert settings.candidate_config("pretrained") == KINDS["pretrained"].config_class()


def test_split_options_default_on_and_each_can_be_turned_off(config_file):
    assert config_file("").split == SplitOptions(True, True, True, True)
    settings = config_file("[split]\nremove_punctuation = false\nremove_mentions = false\n")
    assert settings.split == SplitOptions(remove_punctuation=False, remove_mentions=False)
    assert settings.split.remove_urls and settings.split.remove_retweet_marker


@pytest.mark.parametrize(("toml", "message"), [
    ('[tfidf]\nalpha = [0.1]\n', "unknown setting in [tfidf]: alpha"),
    ('[tfidf]\nword_ngram_range = [1]\n', "[tfidf] word_ngram_range = [1]: expected a list of 2 values"),
    ('[bert]\nepochs = "lots"\n', "[bert] epochs = 'lots': expected a number"),
    ('[bert]\nbatch_size = 1.5\n', "[bert] batch_size = 1.5: expected an integer"),
    ('[bert]\nwarmup_ratio = 1.0\n', "[bert]: warmup_ratio must be in [0, 1)"),
    ('[tfidf]\nmax_train_rows = 0\n', "[tfidf]: max_train_rows must be at least 1"),
    ('[bert]\nmax_train_rows = 100000000000\n', "[bert]: max_train_rows must be at most 100,000,000"),
    ('candidates = "tfidf"\n', "candidates = 'tfidf': expected a list"),
    ('candidates = ["tfidf", "xgboost"]\n', "candidates: unknown kind 'xgboost'; known kinds: tfidf, bert"),
    ('[validation]\nmax_text_length = "lots"\n', "[validation] max_text_length = 'lots': expected an integer"),
    ('[promotion]\nmin_delta = true\n', "[promotion] min_delta = True: expected a number"),
    ('labels = "neg,pos"\n', "labels = 'neg,pos': expected a list"),
    ('[labelled_source]\ntable = "t; DROP TABLE x"\n', "[labelled_source] table = 't; DROP TABLE x' is not a valid"),
    ('[labelled_source]\ncolour = "red"\n', "unknown setting in [labelled_source]: colour"),
    ('tfidf = 3\n', "[tfidf] must be a table of settings, got int"),
    ('nightly = true\n', "unknown setting in"),
    ('[split]\nremove_urls = "yes"\n', "[split] remove_urls = 'yes': expected true or false"),
    ('[split]\nremove_emoji = true\n', "unknown setting in [split]: remove_emoji"),
    ('[bert\nepochs = 1\n', "is not valid TOML"),
])
def test_mistakes_fail_at_load_time_naming_the_setting(config_file, toml, message):
    with pytest.raises(ConfigError) as error:
        config_file(toml)
    assert message in str(error.value)


def test_bad_toml_names_the_file(config_file, tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "textclf.toml")):
        config_file("[bert\n")


def test_a_custom_labelled_source_has_no_weight_column_unless_it_names_one(config_file):
    settings = config_file('[labelled_source]\nschema = "crm"\ntable = "tickets"\n')
    assert settings.labelled_source.weight_column is None
    assert (settings.labelled_source.id_column, settings.labelled_source.text_column) == ("id", "text")
    settings = config_file('[labelled_source]\nschema = "crm"\ntable = "tickets"\nweight_column = "agreement"\n')
    assert settings.labelled_source.weight_column == "agreement"
    assert load_settings.__module__ == "tasks.config"


def test_params_left_empty_keep_the_configuration(config_file):
    settings = config_file('candidates = ["tfidf"]\n[bert]\nepochs = 3\nlearning_rate = 1e-4\n')
    empty_form = {"candidates": None, "bert_checkpoint": None, "bert_epochs": None,
                  "bert_max_train_rows": None, "max_train_rows": None, "learning_curve": False}
    options = RunOptions.from_params(empty_form)
    assert options.enabled(settings) == ("tfidf",)  # textclf.toml decides, not a Param default
    assert options.config(settings, "bert") == settings.candidate_config("bert")

    options = RunOptions.from_params({**empty_form, "candidates": ["bert"], "bert_epochs": 1,
                                      "max_train_rows": 500})
    assert options.enabled(settings) == ("bert",)
    bert = options.config(settings, "bert")
    assert (bert.epochs, bert.learning_rate, bert.max_train_rows) == (1.0, 1e-4, 500)
    assert options.config(settings, "tfidf").max_train_rows == 500  # the global budget

    own = RunOptions.from_params({**empty_form, "bert_max_train_rows": 48, "max_train_rows": 500})
    assert own.config(settings, "bert").max_train_rows == 48  # the kind's own override wins
    with pytest.raises(ConfigError, match="epochs = 'fast': expected a number"):
        RunOptions(overrides={"bert": {"epochs": "fast"}}).config(settings, "bert")


def test_the_readmes_textclf_toml_loads_as_written(tmp_path):
    """Every table and key of the README's example file is one the loader knows, with the
    value the README states (an unknown key would be refused by name)."""
    import re
    import tomllib

    from tasks.config import REPO_ROOT, settings_from_mapping

    blocks = re.findall(r"```toml\n(.*?)```", (REPO_ROOT / "docs" / "configuration.md").read_text(), re.S)
    [block] = [b for b in blocks if "[labelled_source]" in b]
    settings = settings_from_mapping(tomllib.loads(block), tmp_path)
    assert settings.labelled_source.table == "tickets" and settings.documents_source.table == "inbox"
    assert settings.candidate_config("tfidf").cs == (0.1, 0.3, 1.0)
    assert settings.candidate_config("tfidf").successive_halving is True
    assert settings.candidate_config("bert").max_length == 256
    assert (settings.promotion.alpha, settings.promotion.lifetime_nights) == (0.05, 365)
    assert settings.retention.keep_candidates == 10 and settings.airflow.username == "admin"
    assert settings.validation.max_duplicate_share == 0.2

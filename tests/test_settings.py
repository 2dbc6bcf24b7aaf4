"""Settings from PRICECAST_* variables, with documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.model.config import ModelConfig, ModelFields
from pipeline.sequences.config import SequenceConfig, SequenceFields
from pipeline.settings import Settings, bundled_sample_path


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOME", "DATABASE_URL", "SOURCE", "TICKERS", "HORIZON"):
        monkeypatch.delenv(f"PRICECAST_{name}", raising=False)
    settings = Settings()
    assert settings.home_path == Path("~/.pricecast").expanduser()
    assert settings.resolved_database_url == f"sqlite:///{settings.home_path / 'pricecast.db'}"
    assert settings.sources == []  # none implied: `demo` names the bundled sample
    assert (settings.exchange, settings.price_field, settings.jump_threshold) == (
        "XNYS",
        "close",
        0.25,
    )
    assert settings.tickers is None
    assert settings.horizon == 5
    assert settings.sequence_config().window == 10
    model = settings.training_config()
    assert (model.units, model.epochs, model.batch_size, model.loss, model.patience) == (
        32,
        20,
        1024,
        "laplace",
        3,
    )
    assert (model.intervals, settings.intervals) == ("network", "network")
    assert model.learning_rate == 0.003
    assert (settings.scaling, settings.damping, settings.scope) == ("log_ratio", True, "global")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PRICECAST_HOME", str(tmp_path))
    monkeypatch.setenv("PRICECAST_DATABASE_URL", "sqlite:////tmp/x.db")
    monkeypatch.setenv("PRICECAST_TICKERS", "aapl, msft")
    monkeypatch.setenv("PRICECAST_SOURCE", "/a.csv,/b")
    monkeypatch.setenv("PRICECAST_EPOCHS", "3")
    settings = Settings()
    assert settings.home_path == tmp_path
    assert settings.resolved_database_url == "sqlite:////tmp/x.db"
    assert settings.tickers == ["AAPL", "MSFT"]
    assert settings.sources == ["/a.csv", "/b"]
    assert settings.training_config().epochs == 3
    assert Settings(horizon=7, tickers=["x"]).tickers == ["X"]


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICECAST_HORIZON", "0")
    with pytest.raises(ValidationError, match="horizon"):
        Settings()


def test_network_intervals_need_the_distributional_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICECAST_LOSS", "mae")
    with pytest.raises(ValidationError, match="PRICECAST_INTERVALS=network needs"):
        Settings()
    monkeypatch.setenv("PRICECAST_INTERVALS", "ewma")
    assert Settings().training_config().intervals == "ewma"
    with pytest.raises(ValueError, match="PRICECAST_INTERVALS=network needs"):
        ModelConfig(loss="mse")


@pytest.mark.parametrize(
    ("config", "fields"),
    [(ModelConfig, ModelFields.model_fields), (SequenceConfig, SequenceFields.model_fields)],
)
def test_the_stage_parameters_are_the_settings_declared_once(config: type, fields: dict) -> None:
    settings = Settings.model_fields
    for name, field in fields.items():
        assert settings[name].default == field.default, name
        assert settings[name].metadata == field.metadata, name  # the same bounds
        assert settings[name].description, name
    assert config().to_dict() == {name: field.default for name, field in fields.items()}


@pytest.mark.parametrize(
    "changes",
    [{"units": 0}, {"loss": "hinge"}, {"interval_level": 1.0}, {"window": 1}, {"scaling": "z"}],
)
def test_a_stage_parameter_out_of_bounds_is_refused_like_its_setting(
    changes: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SequenceConfig if set(changes) & set(SequenceFields.model_fields) else ModelConfig
    with pytest.raises(ValidationError, match=next(iter(changes))):
        config(**changes)
    for name, value in changes.items():
        monkeypatch.setenv(f"PRICECAST_{name.upper()}", str(value))
    with pytest.raises(ValidationError, match=next(iter(changes))):
        Settings()


def test_demo_names_the_bundled_sample_and_no_source_is_implied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.errors import InputFileError
    from pipeline.ingest.sources import FileSource, build_source, build_sources

    (source,) = build_sources(["DEMO"])
    assert isinstance(source, FileSource) and source.paths == [bundled_sample_path()]
    assert build_source(" demo ").check() == [bundled_sample_path()]
    monkeypatch.setenv("PRICECAST_SOURCE", "demo")
    assert Settings().sources == ["demo"]
    with pytest.raises(InputFileError, match="no source configured, nothing ingested"):
        build_sources([])


def test_a_flow_override_that_names_no_setting_is_refused() -> None:
    from flows.daily import build_settings
    from pipeline.errors import ConfigurationError

    assert build_settings(overrides={"epochs": 5}).epochs == 5
    with pytest.raises(ConfigurationError, match="unknown setting 'epoch' in overrides"):
        build_settings(overrides={"epoch": 5})
    # Read by every process that connects, from its environment: an override would be lost.
    with pytest.raises(ConfigurationError, match="set PRICECAST_STATEMENT_TIMEOUT there"):
        build_settings(overrides={"statement_timeout": 60})


def test_the_size_limit_defaults_to_the_ingest_default_and_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.ingest.fetch import MAX_INPUT_BYTES

    assert Settings().max_input_bytes == MAX_INPUT_BYTES == 4 * 2**30
    monkeypatch.setenv("PRICECAST_MAX_INPUT_BYTES", "1000")
    assert Settings().max_input_bytes == 1000
    monkeypatch.setenv("PRICECAST_MAX_INPUT_BYTES", "0")
    with pytest.raises(ValidationError):
        Settings()

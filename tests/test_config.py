"""Settings: environment, .env, arguments, validation, and .env.example kept in step."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import SecretStr

from memory_drivers.config import DEFAULT_MEMORY_TYPES, Settings, build_settings, get_settings
from memory_drivers.errors import ConfigurationError

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"

pytestmark = pytest.mark.usefixtures("clean_env")


# ---------------------------------------------------------------------------------- sources


def test_defaults_without_environment():
    settings = build_settings()
    assert settings.memory_driver == "sqlite"
    assert settings.memory_db_url == "sqlite:///storage/memories.db"
    assert settings.embedding_provider == "sentence-transformers"
    assert settings.embedding_model == "all-MiniLM-L6-v2"
    assert settings.embedding_api_key is None
    assert settings.memory_extra_types == []
    assert settings.memory_types == DEFAULT_MEMORY_TYPES


def test_reads_environment(monkeypatch):
    monkeypatch.setenv("MEMORY_DRIVER", "custom")
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT", "2.5")
    monkeypatch.setenv("USE_GPU", "true")
    monkeypatch.setenv("EMBEDDING_DIMENSION", "64")
    monkeypatch.setenv("EMBEDDING_API_KEY", "sk-secret")
    settings = build_settings()
    assert settings.memory_driver == "custom"
    assert settings.sqlite_busy_timeout == 2.5
    assert settings.use_gpu is True
    assert settings.embedding_dimension == 64
    assert isinstance(settings.embedding_api_key, SecretStr)
    assert settings.embedding_api_key.get_secret_value() == "sk-secret"
    assert "sk-secret" not in repr(settings)  # the key is never printed


def test_variable_names_are_case_insensitive(monkeypatch):
    monkeypatch.setenv("memory_driver", "lowercase-name")
    assert build_settings().memory_driver == "lowercase-name"


def test_reads_dotenv_in_working_directory(clean_env):
    (clean_env / ".env").write_text(
        "# a comment\nMEMORY_DRIVER=from-dotenv\nKNOWLEDGE_CHUNK_TOKENS=100\n"
        "MEMORY_EXTRA_TYPES=goal, habit\n",
        encoding="utf-8",
    )
    settings = build_settings()
    assert settings.memory_driver == "from-dotenv"
    assert settings.knowledge_chunk_tokens == 100
    assert settings.memory_extra_types == ["goal", "habit"]


def test_dotenv_elsewhere_is_not_read(clean_env, tmp_path_factory, monkeypatch):
    (clean_env / ".env").write_text("MEMORY_DRIVER=from-dotenv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert build_settings().memory_driver == "sqlite"


def test_environment_beats_dotenv(clean_env, monkeypatch):
    (clean_env / ".env").write_text("MEMORY_DRIVER=from-dotenv\n", encoding="utf-8")
    monkeypatch.setenv("MEMORY_DRIVER", "from-env")
    assert build_settings().memory_driver == "from-env"


def test_arguments_beat_environment_and_dotenv(clean_env, monkeypatch):
    (clean_env / ".env").write_text("MEMORY_DRIVER=from-dotenv\n", encoding="utf-8")
    monkeypatch.setenv("MEMORY_DRIVER", "from-env")
    monkeypatch.setenv("EMBEDDING_MODEL", "env-model")
    settings = Settings(memory_driver="from-argument")
    assert settings.memory_driver == "from-argument"
    assert settings.embedding_model == "env-model"  # arguments override only what they name


def test_get_settings_is_cached_until_cache_clear(monkeypatch):
    monkeypatch.setenv("MEMORY_DRIVER", "first")
    first = get_settings()
    assert first is get_settings()
    monkeypatch.setenv("MEMORY_DRIVER", "second")
    assert get_settings().memory_driver == "first"
    get_settings.cache_clear()
    assert get_settings().memory_driver == "second"


def test_settings_are_frozen_and_replace_validates():
    settings = build_settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        settings.memory_driver = "other"  # type: ignore[misc]
    changed = settings.replace(knowledge_chunk_tokens=64, knowledge_chunk_overlap=8)
    assert (changed.knowledge_chunk_tokens, changed.knowledge_chunk_overlap) == (64, 8)
    assert settings.knowledge_chunk_tokens == 512  # the original is untouched
    with pytest.raises(ConfigurationError, match="KNOWLEDGE_CHUNK_OVERLAP"):
        settings.replace(knowledge_chunk_overlap=512)


# ---------------------------------------------------------------------------------- memory types


def test_extra_types_parse_comma_list(monkeypatch):
    monkeypatch.setenv("MEMORY_EXTRA_TYPES", "a, b")
    settings = build_settings()
    assert settings.memory_extra_types == ["a", "b"]
    assert settings.memory_types == (*DEFAULT_MEMORY_TYPES, "a", "b")


def test_extra_types_ignore_blanks_and_defaults(monkeypatch):
    monkeypatch.setenv("MEMORY_EXTRA_TYPES", " goal,, fact , ,habit,")
    settings = build_settings()
    assert settings.memory_extra_types == ["goal", "fact", "habit"]
    # "fact" is already a default type: listed once, in its default place
    assert settings.memory_types == (*DEFAULT_MEMORY_TYPES, "goal", "habit")


def test_extra_types_as_argument_list():
    settings = Settings(memory_extra_types=["goal"])
    assert settings.memory_types[-1] == "goal"


def test_default_type_may_be_an_extra_type(monkeypatch):
    monkeypatch.setenv("MEMORY_EXTRA_TYPES", "goal")
    monkeypatch.setenv("MEMORY_DEFAULT_TYPE", "goal")
    assert build_settings().memory_default_type == "goal"


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMBEDDING_PROVIDER", "bogus"),
        ("SQLITE_SYNCHRONOUS", "OFF"),
        ("SQLITE_BUSY_TIMEOUT", "0"),
        ("FAISS_PERSIST_EVERY", "0"),
        ("EMBEDDING_DIMENSION", "0"),
        ("EMBEDDING_BATCH_SIZE", "not-a-number"),
        ("USE_GPU", "maybe"),
        ("KNOWLEDGE_CHUNK_TOKENS", "4"),
        ("MEMORY_MAX_CONTENT_LENGTH", "0"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        build_settings()
    message = str(caught.value)
    assert variable in message
    assert ".env.example" in message
    assert isinstance(caught.value, ValueError)


def test_chunk_overlap_must_be_smaller_than_chunk_size(monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_CHUNK_TOKENS", "100")
    monkeypatch.setenv("KNOWLEDGE_CHUNK_OVERLAP", "100")
    with pytest.raises(ConfigurationError, match="KNOWLEDGE_CHUNK_OVERLAP") as caught:
        build_settings()
    assert "KNOWLEDGE_CHUNK_TOKENS" in str(caught.value)
    monkeypatch.setenv("KNOWLEDGE_CHUNK_OVERLAP", "99")
    assert build_settings().knowledge_chunk_overlap == 99


def test_unknown_default_type_is_refused(monkeypatch):
    monkeypatch.setenv("MEMORY_DEFAULT_TYPE", "goal")
    with pytest.raises(ConfigurationError, match="MEMORY_DEFAULT_TYPE") as caught:
        build_settings()
    assert "MEMORY_EXTRA_TYPES" in str(caught.value)  # says how to allow it


def test_get_settings_raises_configuration_error(monkeypatch):
    monkeypatch.setenv("SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ConfigurationError, match="SQLITE_SYNCHRONOUS"):
        get_settings()


def test_invalid_value_in_dotenv_names_the_variable(clean_env):
    (clean_env / ".env").write_text("EMBEDDING_PROVIDER=bogus\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="EMBEDDING_PROVIDER"):
        build_settings()


# ---------------------------------------------------------------------------------- .env.example

_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def _example_entries() -> dict[str, str]:
    """NAME -> value written in .env.example. Active lines win over commented-out ones."""
    if not ENV_EXAMPLE.exists():
        pytest.fail(f"{ENV_EXAMPLE} is missing; it must document every setting")
    active: dict[str, str] = {}
    commented: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            target = commented if line.lstrip().startswith("#") else active
            target.setdefault(match[1], match[2].strip())
    return {**commented, **active}


def test_env_example_documents_every_setting():
    documented = set(_example_entries())
    fields = {name.upper() for name in Settings.model_fields}
    assert documented - fields == set(), "documented variables that Settings does not read"
    assert fields - documented == set(), "settings missing from .env.example"


def _written_default_matches(written: str, default: object) -> bool:
    if default is None:
        return written == ""
    if isinstance(default, bool):
        return written.lower() == str(default).lower()
    if isinstance(default, int | float):
        return float(written) == default
    if isinstance(default, str):
        return written.strip("\"'") == default
    if isinstance(default, list):
        return written == ",".join(default)
    return str(default) == written


def test_env_example_shows_the_defaults():
    entries = _example_entries()
    wrong = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        written = entries.get(name.upper())
        if written is None:
            continue  # reported by test_env_example_documents_every_setting
        if not _written_default_matches(written, default):
            wrong[name.upper()] = (written, default)
    assert wrong == {}, "NAME: (written in .env.example, actual default)"


def test_env_example_as_dotenv_gives_the_defaults(clean_env):
    shutil.copy(ENV_EXAMPLE, clean_env / ".env")
    from_example = build_settings()
    assert from_example.model_dump() == build_settings(_env_file=None).model_dump()

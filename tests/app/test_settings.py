"""Settings are checked at start: every bad value reported at once, one line each,
without a traceback; unknown HUB_* names warned about; `hub config` shows what is in
effect with secrets masked."""
import os
import subprocess
import sys

import pytest

from hub.settings import Settings, SettingsError
from tests.support.paths import ROOT


def hub(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_every_bad_value_is_one_clear_line_and_the_hub_does_not_start(tmp_path):
    done = hub("serve", "--port", "1", HUB_DATA_DIR=str(tmp_path), HUB_LOG_LEVEL="verbose",
               HUB_TRUST_PROXY="maybe", HUB_EVENT_RATE="-5", HUB_ACCESS_TOKEN_TTL="0",
               HUB_HANDOFF_THRESHOLD="2", HUB_CORS_ORIGINS="https://app.example.com/path",
               HUB_REDIS_URL="http://127.0.0.1:6379", HUB_LOGIN_PER_MINUTE="ten")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    lines = [line.strip() for line in done.stderr.splitlines()]
    for expected in (
        "HUB_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'",
        "HUB_TRUST_PROXY must be one of 1/true/yes/on/0/false/no/off, got 'maybe'",
        "HUB_EVENT_RATE must be greater than 0, got -5.0",
        "HUB_ACCESS_TOKEN_TTL must be greater than 0, got 0",
        "HUB_HANDOFF_THRESHOLD must be at least 0 and at most 1, got 2.0",
        "HUB_CORS_ORIGINS: 'https://app.example.com/path' is not an origin (scheme://host[:port], no path), nor *",
        "HUB_REDIS_URL must be a URL starting with redis:// or rediss:// or unix:// or redis+cluster://, "
        "got 'http://127.0.0.1:6379'",
        "HUB_LOGIN_PER_MINUTE must be an integer, got 'ten'",
    ):
        assert expected in lines, done.stderr
    assert not (tmp_path / "hub.db").exists()


@pytest.mark.parametrize("raw, value", [("1", True), ("true", True), ("YES", True), ("on", True),
                                        ("0", False), ("false", False), ("no", False), ("Off", False)])
def test_switches_read_the_same_words(raw, value):
    settings = Settings.from_env({"HUB_TRUST_PROXY": raw, "HUB_WS_COMPRESSION": raw})
    assert settings.trust_proxy is value and settings.ws_compression is value


def test_a_cluster_url_lists_its_nodes_and_keeps_its_password_masked():
    from hub.backends.redis import cluster_nodes

    url = "redis+cluster://app:pa%40ss@10.0.0.1:7000,10.0.0.2:7001?ssl=true"
    assert Settings.from_env({"HUB_REDIS_URL": url}).redis_url == url
    assert cluster_nodes(url) == ([("10.0.0.1", 7000), ("10.0.0.2", 7001)],
                                  {"username": "app", "password": "pa@ss", "ssl": True})
    assert "pa%40ss" not in Settings.from_env({"HUB_REDIS_URL": url}).effective()["HUB_REDIS_URL"]
    with pytest.raises(SettingsError, match="host:port"):
        Settings.from_env({"HUB_REDIS_URL": "redis+cluster://10.0.0.1:7000,10.0.0.2"})


def test_zero_recovery_window_is_off_not_an_error():
    assert Settings.from_env({"HUB_RECOVERY_WINDOW": "0"}).recovery_window == 0
    with pytest.raises(SettingsError, match="HUB_RECOVERY_WINDOW must be at least 0, got -1.0"):
        Settings.from_env({"HUB_RECOVERY_WINDOW": "-1"})


def test_config_prints_effective_settings_masked_and_warns_of_unknown_names(tmp_path):
    secret = "s3cret-" + "x" * 40
    done = hub("config", HUB_DATA_DIR=str(tmp_path), HUB_JWT_SECRET=secret, HUB_TRUST_PROXY="on",
               HUB_DATABASE_URL="postgresql://hub:pg-password@db:5432/hub",
               HUB_REDIS_URL="redis://:redis-password@cache:6379/0", HUB_TRUST_PROXI="1")
    assert done.returncode == 0, done.stderr
    shown = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert shown["HUB_TRUST_PROXY"] == "true"
    assert shown["HUB_DATABASE_URL"] == "postgresql+asyncpg://hub:***@db:5432/hub"
    assert shown["HUB_REDIS_URL"] == "redis://:***@cache:6379/0"
    assert shown["HUB_JWT_SECRET"] == "*** (set)"
    assert shown["HUB_ACCESS_TOKEN_TTL"] == "900"
    for secret_text in (secret, "pg-password", "redis-password"):
        assert secret_text not in done.stdout + done.stderr
    assert "unknown setting HUB_TRUST_PROXI ignored (did you mean HUB_TRUST_PROXY?)" in done.stderr
    assert not (tmp_path / "jwt_secret").exists()

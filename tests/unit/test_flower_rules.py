"""maie/flower.py: the access rules `celery -A maie flower` and scripts/start-flower.sh apply."""

from __future__ import annotations

import pytest

from maie.errors import ConfigError
from maie.flower import apply, is_flower_command
from maie.settings import Settings, load_settings


def settings(**values: object) -> Settings:
    return load_settings(env_file=None, **values)


def test_flower_command_is_recognised_after_celery_options() -> None:
    assert is_flower_command(["celery", "-A", "maie", "flower"])
    assert is_flower_command(["celery", "-A", "maie", "--broker", "redis://x/0", "flower", "--port=1"])
    assert not is_flower_command(["celery", "-A", "maie", "worker", "-Q", "flower"])
    assert not is_flower_command(["celery", "-A", "flower", "worker"])


def test_auth_is_required_unless_explicitly_waived() -> None:
    with pytest.raises(ConfigError, match="FLOWER_BASIC_AUTH is not set"):
        apply(settings(), ["celery", "flower"], {})
    environ: dict[str, str] = {}
    warnings = apply(settings(flower_unauthenticated=True), ["celery", "flower"], environ)
    assert warnings and "WITHOUT authentication" in warnings[0]
    assert environ == {"FLOWER_ADDRESS": "127.0.0.1", "FLOWER_PORT": "5555"}


def test_without_auth_only_loopback_addresses() -> None:
    unauth = settings(flower_unauthenticated=True)
    with pytest.raises(ConfigError, match="loopback"):
        apply(unauth, ["celery", "flower", "--address=0.0.0.0"], {})
    with pytest.raises(ConfigError, match="loopback"):
        apply(unauth, ["celery", "flower"], {"FLOWER_ADDRESS": "10.1.2.3"})
    environ: dict[str, str] = {}
    apply(unauth, ["celery", "flower", "--address", "::1"], environ)
    assert environ["FLOWER_ADDRESS"] == "::1"


def test_auth_from_settings_is_exported_and_checked() -> None:
    environ: dict[str, str] = {}
    assert apply(settings(flower_basic_auth="ops:pw", flower_port=6000), ["celery", "flower"], environ) == []
    assert environ == {"FLOWER_BASIC_AUTH": "ops:pw", "FLOWER_ADDRESS": "127.0.0.1", "FLOWER_PORT": "6000"}
    # With auth, another address is the operator's choice (compose binds 0.0.0.0 in the container).
    environ = {"FLOWER_ADDRESS": "0.0.0.0"}
    apply(settings(flower_basic_auth="ops:pw"), ["celery", "flower"], environ)
    assert environ["FLOWER_ADDRESS"] == "0.0.0.0"
    for bad in ("no-colon", "ops:", ":pw", "ops:pw,other"):
        with pytest.raises(ConfigError, match="user:password"):
            apply(settings(), ["celery", "flower"], {"FLOWER_BASIC_AUTH": bad})
    with pytest.raises(ConfigError, match="FLOWER_PORT"):
        apply(settings(flower_basic_auth="ops:pw"), ["celery", "flower"], {"FLOWER_PORT": "http"})

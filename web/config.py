"""The web application's settings: each from an environment variable, with a default that works
on the local stack (whose Keycloak, hub store and secrets the project makes itself)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from hubstream.secrets import key, secrets_dir
from hubstream.settings import PROJECT_ROOT, Settings

ASSETS = PROJECT_ROOT / "web" / "node_modules" / "govuk-frontend" / "dist" / "govuk"
STYLESHEET = PROJECT_ROOT / "web" / "build" / "hub.css"


class ConfigError(ValueError):
    """A setting that is missing or wrong; the message names it."""


def _client_secret(settings: Settings) -> str:
    if os.environ.get("HUBSTREAM_OIDC_CLIENT_SECRET"):
        return os.environ["HUBSTREAM_OIDC_CLIENT_SECRET"]
    path = secrets_dir(settings) / "keycloak.json"
    try:
        return str(json.loads(path.read_text())["clients"]["hub-web"])
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"HUBSTREAM_OIDC_CLIENT_SECRET is not set and the local stack's {path} has no hub-web secret "
            f"({exc}); run `make up`"
        ) from None


@dataclass(frozen=True)
class WebSettings:
    settings: Settings = field(default_factory=Settings)
    # The OpenID Connect provider: its issuer, and this application's client there.
    issuer: str = ""
    client_id: str = field(default_factory=lambda: os.environ.get("HUBSTREAM_OIDC_CLIENT_ID", "hub-web"))
    client_secret: str = ""
    # PostgreSQL as hub_web, the login role that holds nothing until it takes the user's role.
    dsn: str = ""
    # Cookies only over HTTPS: on for any deployment; the local stack serves http://127.0.0.1.
    secure_cookies: bool = field(
        default_factory=lambda: os.environ.get("HUBSTREAM_WEB_SECURE_COOKIES", "") == "1"
    )
    session_hours: int = field(
        default_factory=lambda: int(os.environ.get("HUBSTREAM_WEB_SESSION_HOURS", "8"))
    )

    def __post_init__(self) -> None:
        s = self.settings
        if not self.issuer:
            default = f"{s.keycloak_url}/realms/hubstream"
            object.__setattr__(self, "issuer", os.environ.get("HUBSTREAM_OIDC_ISSUER", default))
        if not self.client_secret:
            object.__setattr__(self, "client_secret", _client_secret(s))
        if not self.dsn:
            default = f"host=127.0.0.1 port={s.pg_port} dbname=hubstream user=hub_web"
            object.__setattr__(self, "dsn", os.environ.get("HUBSTREAM_HUB_WEB_DSN", default))

    @property
    def session_secret(self) -> str:
        """Signs the session cookie (HUBSTREAM_WEB_SESSION_KEY, or web_session.key in the secrets)."""
        return key("web_session", str(self.settings.home)).hex()

    @staticmethod
    def check_assets() -> None:
        for path in (ASSETS / "govuk-frontend.min.js", ASSETS / "assets", STYLESHEET):
            if not path.exists():
                raise ConfigError(
                    f"{path} is missing: `make install` fetches GOV.UK Frontend and builds the styles"
                )


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"

"""account's own settings, from environment variables (``common.settings.EnvSettings``, like the
layer's ``common.settings``; the model is ``account.settings_model``, imported on first
use). Read once per container through ``settings()``; tests call
``settings.cache_clear()`` after changing the environment."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from account.settings_model import AccountSettings


@cache
def settings() -> AccountSettings:
    from pydantic import ValidationError

    from account.settings_model import AccountSettings
    from common.errors import ConfigError

    try:
        return AccountSettings()
    except ValidationError as exc:
        names = ", ".join(str(err["loc"][0]) for err in exc.errors())  # names, never values
        raise ConfigError(f"invalid setting(s): {names}") from None

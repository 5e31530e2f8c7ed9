"""The user errors every entry point (the CLI, the app, the API) reports as one message, without a traceback."""

from assistant.context import ContextError
from assistant.data import DataError
from assistant.engines import EngineError
from assistant.models.catalog import CatalogError
from assistant.models.export import ExportError
from assistant.models.loading import ModelNotFoundError
from assistant.prompts import PromptError
from assistant.settings_reader import ConfigError

USER_ERRORS = (ConfigError, ContextError, DataError, ModelNotFoundError, PromptError, EngineError, CatalogError,
               ExportError)
"""Errors caused by what the user gave (settings, data, templates, models); anything else is a bug."""
EXIT_USER_ERROR = 2

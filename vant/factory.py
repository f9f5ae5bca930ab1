"""A user's own code, named in a config as ``package.module:function`` (``model.name``, ``data.name``).

Resolving a name imports the module, looks the attribute up and checks that it can be called with
the arguments vant will pass, all before anything is written: a name that does not resolve is a
one-line :class:`~vant.config.ConfigError` that names the key and what is wrong. The module must be
importable the usual way (installed, or its folder on ``PYTHONPATH``). Exceptions raised by the
user's code itself (while the module is imported, or when the function runs) are that code's, and
keep their traceback.
"""
from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable

from .config import ConfigError

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
#: ``package.module:function`` (the function may be an attribute path, ``module:Class.build``).
FACTORY_FORM = re.compile(rf"{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*")


def is_factory_name(name: str) -> bool:
    """Whether ``name`` has the form ``package.module:function`` (the caller checks its own prefixes first)."""
    return isinstance(name, str) and FACTORY_FORM.fullmatch(name) is not None


def load_factory(name: str, key: str) -> Callable:
    """The callable that ``name`` (``package.module:function``) names; ``key`` is the config key, for errors."""
    if not is_factory_name(name):
        raise ConfigError(f"{key}={name!r} is not of the form package.module:function")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{key}={name!r}: cannot import module {module_name!r} ({e}); "
                          "is it installed, or its folder on PYTHONPATH?") from e
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{key}={name!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{key}={name!r}: {attr!r} is a {type(obj).__name__}, not a function")
    return obj


def check_call(fn: Callable, name: str, key: str, **kwargs) -> None:
    """Refuse a factory whose signature does not accept ``fn(**kwargs)`` (values are not looked at)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: it answers when called
        return
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        attr = name.partition(":")[2]
        call = ", ".join(f"{k}=..." for k in kwargs)
        raise ConfigError(f"{key}={name!r}: {attr}{sig} cannot be called as {attr}({call}): {e}") from None


def require(module: str, extra: str, what: str):
    """Import an optional dependency, or a one-line ConfigError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs {module}, an optional extra: pip install \"vant[{extra}]\"") from None

"""pgha's local configuration: Patroni's YAML format, its ``PATRONI_*`` environment variables, and validation.

Use ``load_config(path, env)`` to get ``(Config, warnings)`` or a ``ConfigError`` listing every problem; the
dynamic (cluster-wide) configuration lives in ``pgha.core.dynamic``. ``load_ctl_config`` reads the part the
operator verbs need (DCS, namespace, scope), leniently, as patronictl does.
"""

from pgha.config.ctl import CtlConfig, load_ctl_config
from pgha.config.errors import ConfigError
from pgha.config.load import load_config, normalise_namespace
from pgha.config.schema import Auth, Bootstrap, Config, Etcd, Postgresql, RestApi
from pgha.core.dynamic import DynamicConfig, freeze, thaw

__all__ = [
    "Auth", "Bootstrap", "Config", "ConfigError", "CtlConfig", "DynamicConfig", "Etcd", "Postgresql", "RestApi",
    "freeze", "load_config", "load_ctl_config", "normalise_namespace", "thaw",
]

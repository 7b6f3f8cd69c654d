"""Where `fleet agent run` and `fleet controller run` take their settings from, in this order:

1. command-line flags;
2. environment variables: the one an option's --help shows (FLEET_CONTROLLER, FLEET_JOIN_TOKEN,
   FLEET_DATA_DIR, FLEET_AGENT_DATA_DIR), and for every option FLEET_AGENT_<OPTION> (agent) or
   FLEET_CONTROLLER_<OPTION> (controller), e.g. FLEET_AGENT_SIMULATE_GPUS=2xA100-80GB, FLEET_CONTROLLER_LISTEN;
3. the config file: TOML given by --config PATH, else /etc/fleet/agent.toml or /etc/fleet/controller.toml
   when that file exists. Keys are the option names with underscores (`join_token`, `models_dir`;
   dashes are accepted too), values are TOML strings, numbers or arrays (`label = ["zone=a"]`);
4. the defaults --help shows.

The mechanism is click's own: `--config` is an eager option whose callback loads the file into the command's
`default_map` and sets `auto_envvar_prefix`, so click's precedence (command line > envvar > default_map >
default) is exactly the order above, and there is no second merge to keep in sync. An unknown key or a value
of the wrong type is refused before anything starts, naming the file, the key and the valid keys.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from fleet.cli.output import fail

SECTIONS = ("agent", "controller")
# Module-level so tests can point the "file only if it exists" default elsewhere.
DEFAULT_PATHS = {section: Path(f"/etc/fleet/{section}.toml") for section in SECTIONS}
ENV_PREFIXES = {"agent": "FLEET_AGENT", "controller": "FLEET_CONTROLLER"}


class ConfigError(ValueError):
    """The config file cannot be used; the message names the file and what is wrong."""


def load_config(path: Path) -> dict[str, Any]:
    """The file's settings, keys normalised to option names (dashes -> underscores)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    return {key.replace("-", "_"): value for key, value in data.items()}


def check_keys(config: dict[str, Any], valid: list[str], path: Path) -> None:
    """Raise ConfigError naming every key that is not an option, and the keys that are."""
    unknown = sorted(set(config) - set(valid))
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")


def _options(command: Any) -> dict[str, Any]:
    # The settable options: not --config itself, not --help or other eager/hidden-value switches. Duck-typed
    # because typer >= 0.2x vendors its own click (its parameters are not click.Option instances).
    return {p.name: p for p in command.params
            if getattr(p, "param_type_name", "") == "option" and p.name and p.expose_value and not p.is_eager}


def _check_value(ctx: typer.Context, param: Any, value: Any) -> None:
    """Convert `value` as the option would, raising typer.BadParameter if it cannot be. Best effort across
    typer versions: if neither conversion API is there, click still rejects the value when it parses it
    (only the message then does not name the file)."""
    if hasattr(param, "get_runtime_param"):           # typer's vendored click
        param.get_runtime_param().coerce(value, param=param, ctx=ctx)
    elif hasattr(param, "type_cast_value"):           # click
        param.type_cast_value(ctx, value)


def apply_config(ctx: typer.Context, section: str, path: Path | None) -> Path | None:
    """Make the file at `path` (or the section's default file, if it exists) the defaults of ctx's command,
    and turn on FLEET_<SECTION>_<OPTION> variables. Returns the file used, if any. Must run before the other
    options are processed: call it from an eager option's callback (see `config_option`)."""
    ctx.auto_envvar_prefix = ctx.auto_envvar_prefix or ENV_PREFIXES[section]
    if path is None:
        if not DEFAULT_PATHS[section].is_file():
            return None
        path = DEFAULT_PATHS[section]
    config = load_config(path)
    options = _options(ctx.command)
    check_keys(config, sorted(options), path)
    for key, value in config.items():
        try:
            _check_value(ctx, options[key], value)
        except typer.BadParameter as e:
            raise ConfigError(f"config file {path}: {key} = {value!r}: {e.message}") from e
    ctx.default_map = {**(ctx.default_map or {}), **config}
    return path


def _callback(section: str):
    def callback(ctx: typer.Context, value: Path | None) -> Path | None:
        if ctx.resilient_parsing:   # shell completion: never fail on a half-typed command line
            return value
        try:
            return apply_config(ctx, section, value)
        except ConfigError as e:
            fail(str(e))
    return callback


def config_option(section: str) -> Any:
    """The `--config` option for `fleet <section> run`; add it as a parameter: `config: AgentConfigOpt = None`."""
    return Annotated[Path | None, typer.Option(
        "--config", is_eager=True, callback=_callback(section), dir_okay=False, show_default=False,
        help=f"TOML file of settings, keys = option names (join_token = \"…\") "
             f"(default: {DEFAULT_PATHS[section]}, if it exists). Precedence: flags > environment "
             f"({ENV_PREFIXES[section]}_<OPTION> or the variable shown) > this file > defaults")]


AgentConfigOpt = config_option("agent")
ControllerConfigOpt = config_option("controller")

"""`fleet engine install|list`: prepare a node's engines in the local cache (no controller involved).

Progress goes to stderr as plain lines (CI logs, no TTY needed, never reads stdin); the result goes
to stdout.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from fleet.agent import engine_install as ei
from fleet.cli.output import EXIT_ERROR, Output, OutputOpt, Table, console, err_console, fail, print_json


class EngineName(str, Enum):
    llama_cpp = ei.LLAMA_CPP
    vllm = ei.VLLM


DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="FLEET_AGENT_DATA_DIR", show_default=False,
    help="the agent's data dir, as for `fleet agent run --data-dir`: engines go to DATA_DIR/engines, where that "
         "agent looks first [default: the installed agent's (/etc/fleet/agent.toml), else the shared cache]")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache", show_default=False,
    help="exact engine cache directory instead [default: $FLEET_ENGINES_DIR, else ~/.cache/fleet/engines]")]


def engine_cache(cache: Path | None, data_dir: Path | None) -> tuple[Path, str]:
    """Where engines go and why: --cache, --data-dir/engines, $FLEET_ENGINES_DIR, the installed agent's, ~/.cache."""
    import os

    from fleet.cli.config import DEFAULT_PATHS, ConfigError, load_config

    if cache is not None:
        return ei.engines_dir(cache), "--cache"
    if data_dir is not None:
        return ei.agent_engines_dir(data_dir), "the agent data dir given"
    if os.environ.get("FLEET_ENGINES_DIR"):
        return ei.engines_dir(), "$FLEET_ENGINES_DIR"
    config = DEFAULT_PATHS["agent"]
    if config.is_file():
        from fleet.cli.installer import AGENT

        try:
            agent_dir = load_config(config).get("data_dir") or AGENT.state_dir
        except ConfigError as e:
            fail(str(e))
        return ei.agent_engines_dir(Path(str(agent_dir))), f"the installed agent's data dir ({config})"
    return ei.engines_dir(), "the shared cache"

engine_app = typer.Typer(help="Install and list the LLM engines on this machine.", no_args_is_help=True)


def _progress(line: str) -> None:
    err_console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {line}", highlight=False, soft_wrap=True)


@engine_app.command("install")
def install(
    name: Annotated[EngineName, typer.Argument(help="llama.cpp (llama-server built from source) or vllm")],
    data_dir: DataDirOpt = None,
    cache_dir: CacheOpt = None,
    version: Annotated[
        str | None,
        typer.Option("--version", help="cache key: llama-cpp-python sdist version for llama.cpp, vllm version"),
    ] = None,
) -> None:
    """Install an engine, keyed by version; a second call is instant.

    It goes where the agent looks: DATA_DIR/engines of the agent (--data-dir, or the installed agent's),
    else the shared cache that every agent on this machine also searches.
    """
    cache, why = engine_cache(cache_dir, data_dir)
    installer = ei.install_llama_cpp if name is EngineName.llama_cpp else ei.install_vllm
    if ei.cached_engine(cache, name.value, version) is None:
        _progress(f"installing {name.value} {version or ei.DEFAULT_VERSIONS[name.value]} into {cache} ({why})")
    try:
        result = installer(cache, version, progress=_progress)
    except ei.InstallError as e:
        if e.tail:
            err_console.print(e.tail, highlight=False, markup=False)
        fail(str(e), EXIT_ERROR)
    info = result.engine
    how = "cached, nothing to do" if result.cached else f"installed in {result.seconds:.0f}s"
    console.print(f"{info.name} {info.version}: {how}: {info.path} ({result.size_bytes / 1e9:.2f} GB)",
                  highlight=False, soft_wrap=True)


@engine_app.command("list")
def list_engines(data_dir: DataDirOpt = None, cache_dir: CacheOpt = None, output: OutputOpt = Output.table) -> None:
    """Every engine the agent would find (its own cache, the shared one, PATH), with whether it runs."""
    cache, _ = engine_cache(cache_dir, data_dir)
    shared = ei.engines_dir()
    own = [cache] if cache_dir is None and cache != shared else []  # --cache: that directory alone
    rows = []
    for info in ei.find_engines(cache=cache if cache_dir is not None else shared, first=own):
        reported = ei.probe_version(info.name, info.path)
        rows.append({"name": info.name, "version": info.version, "path": str(info.path),
                     "runs": reported is not None, "reports": reported})
    if output is Output.json:
        print_json(rows)
        return
    table = Table("ENGINE", "VERSION", "RUNS", "REPORTS", "PATH")
    for r in rows:
        table.add_row(r["name"], r["version"], "yes" if r["runs"] else "[red]no[/]", r["reports"] or "-", r["path"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")

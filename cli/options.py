"""Options shared by every command that talks to the controller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ControllerOpt = Annotated[str | None, typer.Option(
    "--controller", envvar="FLEET_CONTROLLER", help="controller HOST:PORT [default: 127.0.0.1:50051]")]
TokenOpt = Annotated[str | None, typer.Option(
    "--token", envvar="FLEET_TOKEN", help="admin token [default: read from DATA_DIR/admin-token]", show_default=False)]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", envvar="FLEET_DATA_DIR", help="controller data dir, to find the admin token on the controller host")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", envvar="FLEET_INSECURE", help="plaintext gRPC (a controller started with --insecure)")]
CaFileOpt = Annotated[Path | None, typer.Option(
    "--ca-file", envvar="FLEET_CA", help="the controller's CA (PEM) [default: DATA_DIR/tls/ca.crt]")]

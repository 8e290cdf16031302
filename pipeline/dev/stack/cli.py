"""``pipeline stack up|down|status|logs|env``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from pipeline.dev.stack import artifacts
from pipeline.dev.stack.artifacts import DownloadError
from pipeline.dev.stack.java import JavaNotFound, find_java
from pipeline.dev.stack.launcher import Stack, StackAlreadyRunning, StackError, is_alive, tail
from pipeline.settings import default_stack_dir

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_stack_dir,
    show_default="$PIPELINE_STACK_DIR or ~/.local/state/shop-pipeline/stack",
    help="Where pids, logs, data and the env file live.",
)


@click.group()
def stack() -> None:
    """A local Kafka (KRaft) + Apicurio Registry, on loopback, without Docker."""


@stack.command()
@state_dir_option
@click.option(
    "--brokers",
    type=click.IntRange(1, 5),
    default=1,
    show_default=True,
    help="Kafka nodes (each broker+controller); 3 for the replication tests.",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds each server may take to become ready.",
)
@click.option(
    "--sasl",
    is_flag=True,
    help="Clients log in (SCRAM-SHA-256 or PLAIN); the user and password go to the env file.",
)
@click.option(
    "--registry-auth",
    is_flag=True,
    help="The registry wants HTTP basic auth, checked by a Keycloak started with it; the "
    "login goes to the env file.",
)
@click.option(
    "--tls",
    is_flag=True,
    help="Clients log in over TLS (SASL_SSL, as --sasl) and the registry serves HTTPS; the "
    "certificates come from a CA made now, whose file the env file names.",
)
def up(
    state_dir: Path, brokers: int, timeout: float, sasl: bool, registry_auth: bool, tls: bool
) -> None:
    """Download (once) and start the stack; print where it listens."""
    started = time.monotonic()
    try:
        state = Stack(state_dir).up(
            brokers=brokers, timeout=timeout, sasl=sasl, registry_auth=registry_auth, tls=tls
        )
    except StackAlreadyRunning as running:
        click.echo(f"{running}; `pipeline stack down` first to restart it.")
        return
    except (StackError, DownloadError, JavaNotFound) as error:
        raise click.ClickException(str(error)) from None
    click.echo(
        f"Kafka {state.kafka_version} ({state.brokers} broker(s)) at {state.bootstrap}\n"
        f"Apicurio Registry {state.apicurio_version} at {state.registry_url}"
    )
    if state.keycloak_issuer is not None:
        click.echo(
            f"  logins checked by Keycloak {state.keycloak_version} at {state.keycloak_issuer}"
        )
    if state.tls_ca is not None:
        click.echo(
            f"  over TLS (Kafka SASL_SSL, registry HTTPS), signed by the CA in {state.tls_ca}"
        )
    click.echo(
        f"ready in {time.monotonic() - started:.1f} s; settings in {state_dir / 'stack.env'}"
    )


@stack.command()
@state_dir_option
def down(state_dir: Path) -> None:
    """Stop the processes `up` started (by pid) and delete the stack's state."""
    stopped = Stack(state_dir).down()
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "no stack was running")


@stack.command()
@state_dir_option
@click.argument("server")
@click.option("--kill", is_flag=True, help="SIGKILL, as in a crash (default: SIGTERM).")
def stop(state_dir: Path, server: str, kill: bool) -> None:
    """Stop one SERVER (kafka-N, registry, keycloak) of the running stack; `start` brings it
    back."""
    try:
        Stack(state_dir).stop_server(server, kill=kill)
    except StackError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{server} {'killed' if kill else 'stopped'}")


@stack.command()
@state_dir_option
@click.argument("server")
def start(state_dir: Path, server: str) -> None:
    """Start a stopped SERVER again with its ports and data, and wait until it is ready."""
    try:
        Stack(state_dir).start_server(server)
    except StackError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{server} is up")


@stack.command()
@state_dir_option
def status(state_dir: Path) -> None:
    """Say what runs; exit 1 if the stack is not (fully) up."""
    state = Stack(state_dir).state()
    if state is None:
        click.echo("no stack")
        sys.exit(1)
    for proc in state.processes:
        click.echo(f"{proc.name:10} pid {proc.pid:<8} {'up' if is_alive(proc) else 'DOWN'}")
    click.echo(f"kafka     {state.bootstrap}\nregistry  {state.registry_url}")
    if state.keycloak_issuer is not None:
        click.echo(f"keycloak  {state.keycloak_issuer} (the registry wants a login)")
    if state.tls_ca is not None:
        click.echo(f"tls       clients trust the CA in {state.tls_ca}")
    if not all(is_alive(p) for p in state.processes):
        sys.exit(1)


@stack.command()
@state_dir_option
@click.argument("server", required=False)
@click.option("-n", "--lines", type=int, default=40, show_default=True)
def logs(state_dir: Path, server: str | None, lines: int) -> None:
    """The last lines of each server's log (or of SERVER: kafka-1, registry, keycloak, ...)."""
    state = Stack(state_dir).state()
    if state is None:
        raise click.ClickException("no stack")
    for proc in state.processes:
        if server is None or proc.name == server:
            click.echo(f"==> {proc.log} <==\n{tail(Path(proc.log), lines)}")


@stack.command()
@state_dir_option
def env(state_dir: Path) -> None:
    """Print `export` lines for the stack's addresses: eval "$(pipeline stack env)"."""
    env_file = Stack(state_dir).env_file
    if not env_file.is_file():
        raise click.ClickException("no stack is up")
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#"):
            click.echo(f"export {line}")


@stack.command()
@click.option(
    "--registry-auth",
    is_flag=True,
    help="Keycloak too (what `up --registry-auth` needs): 176 MB, and a minute to build.",
)
def fetch(registry_auth: bool) -> None:
    """Download Kafka and Apicurio into the cache without starting anything."""
    click.echo(f"Kafka {artifacts.KAFKA_VERSION}: {artifacts.kafka_home()}")
    click.echo(f"Apicurio Registry {artifacts.APICURIO_VERSION}: {artifacts.apicurio_home()}")
    if registry_auth:
        try:
            home = artifacts.keycloak_home(find_java())
        except (DownloadError, JavaNotFound) as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"Keycloak {artifacts.KEYCLOAK_VERSION}: {home}")

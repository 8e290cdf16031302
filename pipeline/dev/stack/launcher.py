"""Starting, checking and stopping the local stack.

Everything lives in one state directory: ``stack.json`` (what runs, by pid), ``stack.env`` (the
addresses, read by :mod:`pipeline.settings`), each server's config, log and data. ``down`` stops
exactly the pids it recorded, after checking each is still the process it started.

With ``registry_auth``, a Keycloak runs next to the registry as its OIDC server, and the
registry answers only requests with a login (HTTP basic: the realm's client id and secret).

With ``tls``, the broker's client listener is SASL_SSL (SCRAM or PLAIN) and the registry
serves HTTPS only, both with a certificate of a CA made at this start (pipeline.dev.stack.certs);
the env file names the CA file the clients trust.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.dev.stack import artifacts, config
from pipeline.dev.stack.certs import CertificatesUnavailable, make_certificates
from pipeline.dev.stack.java import find_java
from pipeline.settings import Settings, read_env_file, read_env_text

STATE_FILE = "stack.json"
ENV_FILE = "stack.env"


class StackError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    name: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused pid from ours
    log: str
    # How it was started, so one server can be restarted alone (fault tests); empty in the
    # state of a stack started by an older version.
    command: list[str] = field(default_factory=list)
    cwd: str = ""


@dataclass
class StackState:
    brokers: int
    bootstrap: str
    registry_url: str
    processes: list[ServerProcess]
    kafka_version: str
    apicurio_version: str
    # The OIDC realm the registry checks logins against (--registry-auth), else None.
    keycloak_issuer: str | None = None
    keycloak_version: str | None = None
    # The CA file clients trust (--tls: the broker's SASL_SSL listener, the HTTPS registry).
    tls_ca: str | None = None

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        path = state_dir / STATE_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        raw["processes"] = [ServerProcess(**p) for p in raw["processes"]]
        return cls(**raw)

    def save(self, state_dir: Path) -> None:
        (state_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")


def _start_ticks(pid: int) -> int | None:
    """The start time of a running pid, or None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are plain.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_alive(proc: ServerProcess) -> bool:
    return _start_ticks(proc.pid) == proc.start_ticks


def _spawn(name: str, command: list[str], log: Path, cwd: Path) -> ServerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the CLI; not hit by its terminal's Ctrl-C
        )
    ticks = _start_ticks(popen.pid)
    if ticks is None:
        raise StackError(f"{name} exited at once; see {log}:\n{tail(log)}")
    return ServerProcess(
        name=name,
        pid=popen.pid,
        start_ticks=ticks,
        log=str(log),
        command=command,
        cwd=str(cwd),
    )


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process, so it does not linger as a zombie."""
    # A stack started by another `pipeline stack up` is not our child: init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(proc: ServerProcess, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_alive(proc):
            raise StackError(
                f"{proc.name} exited while starting; last lines of {proc.log}:\n"
                f"{tail(Path(proc.log))}"
            )
        if ready():
            return
        time.sleep(0.5)
    raise StackError(
        f"{proc.name} not ready after {timeout:.0f} s; last lines of {proc.log}:\n"
        f"{tail(Path(proc.log))}"
    )


def _start_kafka_node(
    java: str,
    jvm: list[str],
    cluster_id: str,
    node: config.KafkaNode,
    nodes: list[config.KafkaNode],
    sasl_user: config.SaslUser | None,
    tls: config.StackTls | None = None,
) -> ServerProcess:
    """Format the node's log dir for the cluster (KRaft needs it), then start the node."""
    node_dir = node.data_dir.parent
    node_dir.mkdir(parents=True, exist_ok=True)
    props = node_dir / "server.properties"
    props.touch(mode=0o600)  # holds the SASL user's password when there is one
    props.write_text(config.render_properties(config.kafka_properties(node, nodes, sasl_user, tls)))
    storage_tool = [java, *jvm, "kafka.tools.StorageTool", "format"]
    # In KRaft, SCRAM users live in the metadata log: they are created when it is formatted.
    scram = ["--add-scram", sasl_user.scram_credential()] if sasl_user else []
    formatted = subprocess.run(
        [*storage_tool, "-t", cluster_id, "-c", str(props), *scram],
        capture_output=True,
        text=True,
        check=False,
    )
    if formatted.returncode != 0:
        raise StackError(
            f"formatting kafka-{node.node_id} failed:\n{formatted.stdout}{formatted.stderr}"
        )
    return _spawn(
        f"kafka-{node.node_id}",
        [java, *jvm, "kafka.Kafka", str(props)],
        node_dir / "server.log",
        node_dir,
    )


def broker_ready(
    client_config: dict[str, str], expected_brokers: int, answering_node: int | None = None
) -> bool:
    """True once a metadata request is answered and lists every broker; with
    ``answering_node``, only if that node answered it itself (its peers may still list a
    node that was just killed)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**client_config, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=2)
    except Exception:
        return False
    if answering_node is not None and metadata.orig_broker_id != answering_node:
        return False
    return len(metadata.brokers) >= expected_brokers


def _answers_200(
    request: urllib.request.Request | str, context: ssl.SSLContext | None = None
) -> bool:
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def registry_ready(
    registry_url: str, basic_auth: str | None = None, context: ssl.SSLContext | None = None
) -> bool:
    """True once the registry lists its subjects; with ``basic_auth`` (``user:password``),
    asked with that login, which also proves that the registry reaches its OIDC server; over
    https, trusting what ``context`` trusts."""
    request = urllib.request.Request(registry_url + "/subjects")
    if basic_auth is not None:
        token = base64.b64encode(basic_auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    return _answers_200(request, context)


def keycloak_ready(issuer: str) -> bool:
    """True once the realm was imported and Keycloak serves its OIDC discovery document."""
    return _answers_200(issuer + "/.well-known/openid-configuration")


def _start_keycloak(
    java: str,
    dist: Path,
    folder: Path,
    port: int,
    client: config.RegistryClient,
    heap_mb: int,
) -> ServerProcess:
    """Start Keycloak with ``folder`` as its home: its ``lib`` links to the (built)
    distribution, its ``data`` holds this stack's database (a copy of the distribution's
    empty template) and the realm to import."""
    # Keycloak's database holds the client secret too: the folder is the owner's alone.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    imports = folder / "data" / "import"
    imports.mkdir(parents=True, exist_ok=True)
    (folder / "lib").symlink_to(dist / "lib", target_is_directory=True)
    template = dist / "template" / config.KEYCLOAK_DATABASE_FILE
    if template.is_file():  # an empty database: Keycloak need not create its schema
        (folder / "data" / "h2").mkdir()
        shutil.copyfile(template, folder / "data" / "h2" / config.KEYCLOAK_DATABASE_FILE)
    realm = imports / "realm.json"
    realm.touch(mode=0o600)  # holds the client secret
    realm.write_text(config.render_realm(client))
    command = [
        java,
        *config.keycloak_jvm_args(home=folder, dist=dist, heap_mb=heap_mb),
        *config.keycloak_server_args(port),
    ]
    return _spawn("keycloak", command, folder / "keycloak.log", folder)


class Stack:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def env_file(self) -> Path:
        return self.state_dir / ENV_FILE

    def state(self) -> StackState | None:
        return StackState.load(self.state_dir)

    def running(self) -> StackState | None:
        """The recorded stack if any of its processes still runs."""
        state = self.state()
        if state is not None and any(is_alive(p) for p in state.processes):
            return state
        return None

    def up(
        self,
        brokers: int = 1,
        kafka_heap_mb: int | None = None,
        registry_heap_mb: int = 512,
        timeout: float = 120.0,
        sasl: bool = False,
        registry_auth: bool = False,
        keycloak_heap_mb: int = 384,
        tls: bool = False,
    ) -> StackState:
        """Start the stack. With ``sasl``, clients must log in (SCRAM-SHA-256 or PLAIN) as the
        user written, with its password, to the env file. With ``registry_auth``, the registry
        wants HTTP basic auth with the OIDC client id and secret written to the env file
        (Keycloak, started too, checks them). With ``tls`` (which implies ``sasl``), that
        login goes over TLS (SASL_SSL), the registry serves HTTPS, and the env file names the
        CA that signed both certificates."""
        sasl = sasl or tls
        existing = self.running()
        if existing is not None:
            raise StackAlreadyRunning(existing)
        if self.state() is not None:
            self._clean()  # leftovers of a stack that died on its own
        java = find_java()
        kafka_home = artifacts.kafka_home()
        apicurio_home = artifacts.apicurio_home()
        keycloak_home = artifacts.keycloak_home(java) if registry_auth else None

        self.state_dir.mkdir(parents=True, exist_ok=True)
        kafka_ports = (3 if sasl else 2) * brokers
        ports = config.free_ports(kafka_ports + 2 + (1 if registry_auth else 0))
        nodes = config.plan_nodes(brokers, self.state_dir, ports[:kafka_ports], sasl=sasl, tls=tls)
        registry_port, management_port = ports[kafka_ports : kafka_ports + 2]
        bootstrap = ",".join(n.bootstrap for n in nodes)
        scheme = "https" if tls else "http"
        registry_url = f"{scheme}://{config.HOST}:{registry_port}{config.REGISTRY_API}"
        try:
            stack_tls = make_certificates(self.state_dir / "tls") if tls else None
        except CertificatesUnavailable as error:
            raise StackError(str(error)) from None
        sasl_user = config.SaslUser.generate() if sasl else None
        registry_client = config.RegistryClient.generate() if registry_auth else None
        issuer = config.keycloak_issuer(ports[-1]) if registry_auth else None
        env_text = config.env_file_text(
            bootstrap, registry_url, min(brokers, 3), sasl_user, registry_client, stack_tls
        )
        # Readiness is checked as a client of the pipeline would connect: with the login.
        client_settings = Settings.from_env(read_env_text(env_text))
        heap = kafka_heap_mb or (512 if brokers == 1 else 384)

        log4j = self.state_dir / "log4j2.properties"
        log4j.write_text(config.LOG4J2_PROPERTIES)
        kafka_jvm = [*config.kafka_jvm_args(heap, log4j), "-cp", str(kafka_home / "lib" / "*")]
        cluster_id = config.new_cluster_id()
        state = StackState(
            brokers=brokers,
            bootstrap=bootstrap,
            registry_url=registry_url,
            processes=[],
            kafka_version=artifacts.KAFKA_VERSION,
            apicurio_version=artifacts.APICURIO_VERSION,
            keycloak_issuer=issuer,
            keycloak_version=artifacts.KEYCLOAK_VERSION if registry_auth else None,
            tls_ca=str(stack_tls.ca) if stack_tls is not None else None,
        )
        try:
            for node in nodes:
                state.processes.append(
                    _start_kafka_node(
                        java, kafka_jvm, cluster_id, node, nodes, sasl_user, stack_tls
                    )
                )
            if keycloak_home is not None and registry_client is not None:
                state.processes.append(
                    _start_keycloak(
                        java,
                        keycloak_home,
                        self.state_dir / "keycloak",
                        ports[-1],
                        registry_client,
                        keycloak_heap_mb,
                    )
                )
            # The registry may start before Keycloak answers: it looks the realm up on the
            # first request that needs it.
            registry_jvm = config.registry_jvm_args(
                registry_port, management_port, registry_heap_mb, oidc_issuer=issuer, tls=stack_tls
            )
            registry_dir = self.state_dir / "registry"
            state.processes.append(
                _spawn(
                    "registry",
                    [java, *registry_jvm, "-jar", str(apicurio_home / "quarkus-run.jar")],
                    registry_dir / "registry.log",
                    registry_dir,
                )
            )
            state.save(self.state_dir)  # saved before waiting: `down` can stop a slow start
            for proc in state.processes:
                self._wait_ready(proc, state, client_settings, timeout)
        except BaseException:
            self._stop(state.processes)
            state.save(self.state_dir)
            raise
        self.env_file.touch(mode=0o600)  # it may hold the SASL password, the registry secret
        self.env_file.write_text(env_text)
        return state

    @staticmethod
    def _wait_ready(
        proc: ServerProcess,
        state: StackState,
        settings: Settings,
        timeout: float,
        answering_node: int | None = None,
    ) -> None:
        """Wait until ``proc`` answers as a client with ``settings`` would use it."""
        if proc.name == "registry":
            basic_auth = settings.schema_registry_basic_auth
            trusted = settings.registry_tls
            context = trusted.context() if trusted is not None else None
            _wait(proc, lambda: registry_ready(state.registry_url, basic_auth, context), timeout)
        elif proc.name == "keycloak":
            issuer = state.keycloak_issuer
            if issuer is None:
                raise StackError("this stack records no Keycloak address")
            _wait(proc, lambda: keycloak_ready(issuer), timeout)
        else:
            client = settings.kafka_client_config()
            if answering_node is not None:
                # Ask the restarted node itself: its bootstrap address is its place in the list.
                client["bootstrap.servers"] = state.bootstrap.split(",")[answering_node - 1]
            _wait(proc, lambda: broker_ready(client, state.brokers, answering_node), timeout)

    def down(self) -> list[str]:
        """Stop what ``up`` started; return the names of the processes that were running."""
        state = self.state()
        if state is None:
            return []
        stopped = self._stop(state.processes)
        self._clean()
        return stopped

    @staticmethod
    def _stop(processes: list[ServerProcess], grace: float = 30.0) -> list[str]:
        alive = [p for p in processes if is_alive(p)]
        # Registry first, then brokers in reverse order, so the last broker stays controller.
        for proc in reversed(alive):
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(is_alive(p) for p in alive):
            time.sleep(0.2)
        for proc in alive:
            if is_alive(proc):
                os.kill(proc.pid, signal.SIGKILL)
        for proc in alive:
            _reap(proc.pid)
        return [p.name for p in alive]

    def stop_server(self, name: str, kill: bool = False) -> None:
        """Stop one server of the running stack: SIGTERM, or with ``kill`` SIGKILL (a crash).
        Its ports, config and data stay, for :meth:`start_server`."""
        proc = self._server(name)
        if not is_alive(proc):
            raise StackError(f"{name} is not running")
        if kill:
            os.kill(proc.pid, signal.SIGKILL)
            while is_alive(proc):
                time.sleep(0.1)
            _reap(proc.pid)
        else:
            self._stop([proc])

    def start_server(self, name: str, timeout: float = 120.0) -> ServerProcess:
        """Start a stopped server again, as it was (same ports, same data), and wait until ready."""
        state = self.state()
        proc = self._server(name)
        if state is None or is_alive(proc):
            raise StackError(f"{name} is already running")
        if not proc.command:
            raise StackError(f"{name} was started by an older version: `stack down`, then `up`")
        restarted = _spawn(proc.name, proc.command, Path(proc.log), Path(proc.cwd))
        state.processes = [restarted if p.name == name else p for p in state.processes]
        state.save(self.state_dir)
        settings = Settings.from_env(read_env_file(self.env_file))
        node_id = int(name.removeprefix("kafka-")) if name.startswith("kafka-") else None
        self._wait_ready(restarted, state, settings, timeout, answering_node=node_id)
        return restarted

    def _server(self, name: str) -> ServerProcess:
        state = self.state()
        if state is None:
            raise StackError("no stack")
        for proc in state.processes:
            if proc.name == name:
                return proc
        names = ", ".join(p.name for p in state.processes)
        raise StackError(f"no server {name!r} in this stack (it has {names})")

    def _clean(self) -> None:
        """Forget everything of the last stack: state, env file, logs, data."""
        if self.state_dir.is_dir():
            shutil.rmtree(self.state_dir)


class StackAlreadyRunning(StackError):
    def __init__(self, state: StackState) -> None:
        super().__init__(
            f"a stack is already running (kafka {state.bootstrap}, registry {state.registry_url})"
        )
        self.state = state

"""Dispatch throughput and latency: W workers, N zero-work tasks, every change durable.

Run:  .venv/bin/python benchmarks/dispatch.py [--workers 50] [--tasks 10000] [--slots 4]

A coordinator process owns a fresh DuckDB file; one more process hosts W worker
agents, each with its own real WebSocket connection (they share that process's
event loop, as many small workers would share a machine); this process submits
N ``simulated`` tasks of zero duration over REST in batches and waits until
all are committed as completed. It prints:

* end-to-end tasks/s: N / (time the last result was committed - time the first
  task was committed), from the coordinator's own timestamps in DuckDB, and
  the client's wall time from its first POST to seeing every task completed;
* submit-to-assignment latency p50/p99: per task, the attempt's assignment
  time minus the task's create time (both committed in DuckDB). With 10,000
  tasks queued at once this is mostly queueing; a second phase submits paced
  single tasks to an idle fleet and reports create time to the worker's
  accept (which includes the commit before the assignment is sent, the
  network and the worker);
* how many DuckDB commits it took (group commit: many events per commit);
* the coordinator process's CPU time (user + system) over the measured phase,
  and per task: steadier than the throughput on a machine shared with other
  work.

With ``--tls`` the fleet runs over TLS with tokens: the coordinator serves
HTTPS/WSS with ``--client-ca``, the REST client verifies it with the fleet's
CA, and every agent connects with ``wss://``, verifying the coordinator and
presenting its own worker certificate (issued by the fleet's CA for its id).
``--compare`` runs plain and TLS fleets alternately in the same session
(``--rounds`` each) and prints both medians and their ratio: the cost of
security, measured where the machine's noise is the same for both.

With ``--dashboards N`` the measured run has N dashboards open: one more
process (so its CPU is not the benchmark client's) keeps N clients on the
dashboard's event stream (``/dashboard/events``, with the fleet's token as a
bearer header, as a signed-in browser's EventSource would with the cookie),
reading and discarding every event, from before the first task is submitted
until the last one is seen completed. ``--compare-dashboards N`` runs fleets
with 0 and N dashboards alternately in the same session (``--rounds`` each,
which goes first flipping every round) and prints both medians and their
ratio: what watching costs the fleet.

With ``--store postgresql://...`` the coordinator keeps its state in that
PostgreSQL database (``testfleet coordinator --store``, issue 13) instead of a
DuckDB file, and the figures are read back through DuckDB's postgres extension
(the store's own read side). ``--both`` starts a private PostgreSQL cluster
(tests/pg_cluster.py), runs DuckDB and PostgreSQL fleets alternately in the
same session (``--rounds`` each, a fresh database per run) and prints both
medians and their ratio (issue 13's aim: PostgreSQL at least half of DuckDB).

With ``--transport grpc`` the agents join over gRPC instead of the WebSocket
(the coordinator's ``--grpc-port``, issue 16): the same frames in the codec
asked for. ``--compare-transports`` runs WebSocket and gRPC fleets
alternately in the same session, ``--rounds`` each, for both codecs (JSON and
MessagePack, and gRPC with Protocol Buffers: five variants, order rotated
every round), and prints a table of medians with each figure's ratio to the
WebSocket's with the same codec and with JSON.

With ``--ray-python`` it also runs the same number of no-op tasks on Ray
(benchmarks/peers/ray_noop.py; not durable) and prints that figure beside.

Nothing here is asserted; the figures are quoted in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from testfleet.local_fleet import COORDINATOR, CoordinatorOptions, LocalFleet, LocalFleetError
from testfleet.security.bootstrap import create_token_in_file
from testfleet.security.credentials import write_token_file
from testfleet.security.pki import ca_files, issue_worker, worker_files
from testfleet.security.tokens import Role
from testfleet.store.postgres.dsn import parse_dsn
from testfleet.store.postgres.store import attach_read_only

T = TypeVar("T")

HERE = Path(__file__).resolve()


def agent_id(n: int) -> str:
    return f"bench-{n:03d}"


async def host_workers(
    url: str,
    count: int,
    slots: int,
    codec: str,
    pki: Path | None,
    token_dir: Path | None,
    transport: str = "websocket",
) -> None:
    """Run ``count`` worker agents in this process until SIGTERM. Every worker needs
    a credential: with ``pki`` (a TLS fleet's CA folder) each connects over
    ``wss://`` (``grpcs://``) with its own certificate; otherwise each presents the
    worker token ``measure`` made for its id (``token_dir``/ID.token). ``url`` is
    the coordinator's HTTP address, or its gRPC one with ``transport`` grpc."""
    from testfleet.protocol.channel import Connector
    from testfleet.protocol.messages import Codec
    from testfleet.security.credentials import read_token_file
    from testfleet.security.tls import ClientTlsFiles, client_context
    from testfleet.worker.agent import AgentSettings, WorkerAgent
    from testfleet.worker.executors.registry import default_executors
    from testfleet.worker.grpc_channel import GrpcConnector, GrpcTls
    from testfleet.worker.hardware import detect_capabilities
    from testfleet.worker.websocket_channel import WebSocketConnector

    def connector(worker_id: str) -> Connector:
        if transport == "grpc":
            return grpc_connector(worker_id)
        if pki is None:
            assert token_dir is not None, "a plain fleet's agents need --token-dir"
            return WebSocketConnector(token=read_token_file(token_dir / f"{worker_id}.token"))
        files = worker_files(pki, worker_id)
        # One context per agent: each presents its own certificate, as real workers do.
        context = client_context(ClientTlsFiles(ca_files(pki).cert, files.cert, files.key))
        return WebSocketConnector(ssl_context=context)

    def grpc_connector(worker_id: str) -> GrpcConnector:
        if pki is None:
            assert token_dir is not None, "a plain fleet's agents need --token-dir"
            return GrpcConnector(token=read_token_file(token_dir / f"{worker_id}.token"))
        files = worker_files(pki, worker_id)
        tls = GrpcTls(
            ca_files(pki).cert.read_bytes(), files.cert.read_bytes(), files.key.read_bytes()
        )
        return GrpcConnector(tls=tls)

    executors = default_executors()
    caps = detect_capabilities(tags={}, task_types=list(executors), probe_torch=False)
    agents = [
        WorkerAgent(
            AgentSettings(
                coordinator_url=url,
                worker_id=agent_id(n),
                slots=slots,
                codec=Codec(codec),
                work_dir=Path(tempfile.gettempdir()) / "testfleet-bench",
            ),
            caps,
            executors,
            connector=connector(agent_id(n)),
        )
        for n in range(count)
    ]
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for agent in agents:
            agent.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    await asyncio.gather(*(a.run() for a in agents))


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process ``pid`` has used so far, from /proc.

    Printed beside the throughput: on a machine shared with other work the
    wall-clock figure moves with everyone's load, the coordinator's CPU per
    task much less."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class Figures:
    """One fleet's run: what it prints, and the throughput ``--compare`` sets side by side."""

    tls: bool
    tasks_per_second: float
    dashboards: int
    lines: list[str]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--slots", type=int, default=4, help="slots per worker")
    parser.add_argument("--batch", type=int, default=1000, help="tasks per submit request")
    parser.add_argument(
        "--codec",
        choices=["json", "msgpack", "protobuf"],
        default="json",
        help="frame encoding (protobuf: with --transport grpc only)",
    )
    parser.add_argument("--probe", type=int, default=200, help="paced single tasks, phase 2")
    parser.add_argument(
        "--transport",
        choices=["websocket", "grpc"],
        default="websocket",
        help="how the agents join: the WebSocket, or gRPC (the coordinator's --grpc-port)",
    )
    parser.add_argument(
        "--compare-transports",
        action="store_true",
        help="WebSocket and gRPC, JSON and MessagePack, alternately in this session: a table",
    )
    parser.add_argument(
        "--tls", action="store_true", help="run over TLS: HTTPS/WSS, worker certificates, tokens"
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="run plain and TLS fleets alternately in this session and print both and the ratio",
    )
    parser.add_argument(
        "--dashboards",
        type=int,
        default=0,
        help="keep this many clients on /dashboard/events during the run (another process)",
    )
    parser.add_argument(
        "--compare-dashboards",
        type=int,
        metavar="N",
        help="run fleets with 0 and N dashboards alternately in this session; both and the ratio",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="with --compare/--compare-dashboards: runs of each"
    )
    parser.add_argument(
        "--store",
        default="duckdb",
        help="duckdb (a fresh file, the default) or a postgresql:// DSN of an empty database",
    )
    parser.add_argument(
        "--both",
        action="store_true",
        help="run DuckDB and PostgreSQL (a private cluster) alternately; both and the ratio",
    )
    parser.add_argument(
        "--ray-python",
        help="an interpreter with ray installed: also run benchmarks/peers/ray_noop.py "
        "with the same task count, in the same session, and print its figure",
    )
    parser.add_argument("--host-workers", help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--token-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--watch-dashboards", help=argparse.SUPPRESS)
    parser.add_argument("--token-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ca", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch_dashboards:
        asyncio.run(
            watch_dashboards(args.watch_dashboards, args.dashboards, args.token_file, args.ca)
        )
        return
    if args.host_workers:
        asyncio.run(
            host_workers(
                args.host_workers,
                args.workers,
                args.slots,
                args.codec,
                args.pki,
                args.token_dir,
                args.transport,
            )
        )
        return

    if args.compare_transports:
        compare_transports(args)
    elif args.both:
        compare_stores(args)
    elif args.compare:
        compare(args)
    elif args.compare_dashboards:
        compare_dashboards(args)
    else:
        figures = measure(args, tls=args.tls, dashboards=args.dashboards, store=args.store)
        for line in figures.lines:
            print(line)
    if args.ray_python:
        peer = subprocess.run(
            [
                args.ray_python,
                str(HERE.parent / "peers" / "ray_noop.py"),
                "--tasks",
                str(args.tasks),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        lines = peer.stdout.strip().splitlines()
        print(f"  peer, same session: {lines[-1] if lines else 'failed: ' + peer.stderr[-300:]}")


def compare(args: argparse.Namespace) -> None:
    """Plain and TLS alternately, ``args.rounds`` each, then both medians and the ratio."""
    plain, secured = alternate(args.rounds, lambda tls: measure(args, tls=tls), False, True)
    print_comparison(f"plain vs TLS, {args.rounds} runs each", "plain", plain, "TLS", secured)


def compare_transports(args: argparse.Namespace) -> None:
    """WebSocket and gRPC with each codec they share, and gRPC with Protocol
    Buffers, ``args.rounds`` runs each, the five variants in an order rotated
    every round (so none always goes first), then a table: each variant's
    median and range, against the WebSocket with the same codec and with JSON."""
    variants = [(t, c) for c in ("json", "msgpack") for t in ("websocket", "grpc")]
    variants.append(("grpc", "protobuf"))
    figures: dict[tuple[str, str], list[float]] = {variant: [] for variant in variants}
    for round_number in range(args.rounds):
        shift = round_number % len(variants)
        for transport, codec in variants[shift:] + variants[:shift]:
            run = argparse.Namespace(**{**vars(args), "transport": transport, "codec": codec})
            result = measure(run, tls=args.tls)
            figures[(transport, codec)].append(result.tasks_per_second)
            for line in result.lines:
                print(line, flush=True)
    print(
        f"WebSocket vs gRPC, {args.rounds} runs each, same session "
        f"({args.workers} workers x {args.slots} slots, {args.tasks} tasks"
        f"{', over TLS' if args.tls else ''}):"
    )
    print(
        "  | transport | codec | tasks/s (median) | range | vs WebSocket, same codec "
        "| vs WebSocket JSON |"
    )
    print("  |---|---|---|---|---|---|")
    json_base = statistics.median(figures[("websocket", "json")])
    for transport, codec in variants:
        values = figures[(transport, codec)]
        median = statistics.median(values)
        same = figures.get(("websocket", codec))
        versus = f"{median / statistics.median(same):.2f}" if same else "(WebSocket has none)"
        print(
            f"  | {transport} | {codec} | {median:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
            f"| {versus} | {median / json_base:.2f} |"
        )


def compare_stores(args: argparse.Namespace) -> None:
    """DuckDB and PostgreSQL alternately, ``args.rounds`` each, on a private cluster
    started here (a fresh database per run), then both medians and the ratio."""
    sys.path.insert(0, str(HERE.parent.parent / "tests"))
    from pg_cluster import PgCluster

    cluster = PgCluster(durable=True)  # fsync on, as DuckDB's commits are
    try:

        def run(kind: str) -> Figures:
            store = "duckdb" if kind == "duckdb" else cluster.dsn(cluster.new_database(empty=True))
            return measure(args, tls=args.tls, store=store)

        duck, postgres = alternate(args.rounds, run, "duckdb", "postgres")
    finally:
        cluster.remove()
    print_comparison(
        f"DuckDB vs PostgreSQL store, {args.rounds} runs each",
        "DuckDB",
        duck,
        "PostgreSQL",
        postgres,
    )


class PostgresLocalFleet(LocalFleet):
    """A LocalFleet whose coordinator keeps its state in PostgreSQL (``--store``):
    the admin token is written into that database, and ``--db`` becomes ``--store``."""

    def __init__(self, dsn: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dsn = dsn
        self._admin_secret: str | None = None

    @property
    def token(self) -> str:
        if self._admin_secret is None:
            self.root.mkdir(parents=True, exist_ok=True)
            issued = create_token_in_file(self.dsn, "local-fleet-admin", Role.ADMIN)
            write_token_file(self.token_file, issued.secret)
            self._admin_secret = issued.secret
        return self._admin_secret

    def coordinator_argv(self, options: CoordinatorOptions) -> list[str]:
        argv = super().coordinator_argv(options)
        at = argv.index("--db")
        return [*argv[:at], "--store", self.dsn, *argv[at + 2 :]]


def compare_dashboards(args: argparse.Namespace) -> None:
    """0 and N dashboards alternately, ``args.rounds`` each, then both medians and the ratio."""
    watched = args.compare_dashboards
    alone, seen = alternate(
        args.rounds,
        lambda dashboards: measure(args, tls=args.tls, dashboards=dashboards),
        0,
        watched,
    )
    print_comparison(
        f"0 vs {watched} dashboards, {args.rounds} runs each", "without", alone, "with", seen
    )


def alternate(
    rounds: int, run: Callable[[T], Figures], first: T, second: T
) -> tuple[list[float], list[float]]:
    """``run`` with ``first`` and ``second`` alternately, ``rounds`` each, printing each
    run's figures; the two sides' throughputs, paired by round.

    The order flips every round (a b, b a, a b, ...): the second run of a pair
    may gain from the first's warm caches, and that must count for neither side
    (with a fixed order, 0 vs 10 dashboards once read 1.13 and 1.21)."""
    ones: list[float] = []
    others: list[float] = []
    for round_number in range(rounds):
        order = (first, second) if round_number % 2 == 0 else (second, first)
        for variant in order:
            figures = run(variant)
            (ones if variant == first else others).append(figures.tasks_per_second)
            for line in figures.lines:
                print(line, flush=True)
    return ones, others


def print_comparison(
    title: str, one_name: str, ones: list[float], other_name: str, others: list[float]
) -> None:
    """Both medians and ranges, the ratio of medians, and the paired ratios: on a
    shared machine whose speed drifts, the paired ratio is steadier."""
    one_median, other_median = statistics.median(ones), statistics.median(others)
    paired = [b / a for a, b in zip(ones, others, strict=True)]
    print(
        f"{title}, alternating (order flipped every round), same session: "
        f"{one_name} {one_median:,.0f} tasks/s (median; {min(ones):,.0f}-{max(ones):,.0f}), "
        f"{other_name} {other_median:,.0f} tasks/s ({min(others):,.0f}-{max(others):,.0f}); "
        f"{other_name}/{one_name} {other_median / one_median:.2f} (ratio of medians), "
        f"{statistics.median(paired):.2f} (median of paired runs: "
        f"{', '.join(f'{r:.2f}' for r in paired)})"
    )


async def watch_dashboards(url: str, count: int, token_file: Path, ca: Path | None) -> None:
    """Keep ``count`` clients on the dashboard's event stream until SIGTERM, reading
    and discarding what comes; print ``connected`` once every one has its first
    bytes, and at the end how many events they read. Runs in its own process
    (``measure`` starts it), so its CPU is not the benchmark client's."""
    import httpx

    from testfleet.security.credentials import read_token_file

    headers = {
        "Authorization": f"Bearer {read_token_file(token_file)}",
        "Accept": "text/event-stream",
    }
    events = 0
    ready = asyncio.Event()
    connected = 0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal events, connected
        first = True
        while True:  # the server ends a stream after a while; a browser reconnects
            async with client.stream("GET", "/dashboard/events", headers=headers) as response:
                if response.status_code != 200:
                    raise SystemExit(f"/dashboard/events answered {response.status_code}")
                async for chunk in response.aiter_text():
                    events += chunk.count("\n\n")
                    if first:
                        first = False
                        connected += 1
                        if connected == count:
                            ready.set()

    async with httpx.AsyncClient(
        base_url=url, verify=str(ca) if ca is not None else True, timeout=None
    ) as client:
        tasks = [asyncio.create_task(one(client)) for _ in range(count)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await ready.wait()
        print("connected", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"events {events}", flush=True)


def start_dashboards(fleet: LocalFleet, count: int) -> subprocess.Popen[str]:
    """The process that keeps ``count`` dashboards open (see ``watch_dashboards``),
    once all of them are connected."""
    argv = [
        sys.executable,
        str(HERE),
        "--watch-dashboards",
        fleet.url,
        "--dashboards",
        str(count),
        "--token-file",
        str(fleet.token_file),
    ]
    if fleet.pki is not None:
        argv += ["--ca", str(ca_files(fleet.pki).cert)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "connected":
        process.kill()
        raise SystemExit(f"the dashboards did not connect (exit {process.wait()}): {line!r}")
    return process


def stop_dashboards(process: subprocess.Popen[str]) -> int:
    """Stop the dashboards' process; how many events they read."""
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return int(last.split()[1]) if last.startswith("events ") else -1


def measure(
    args: argparse.Namespace, *, tls: bool, dashboards: int = 0, store: str = "duckdb"
) -> Figures:
    """Run one fleet (plain or over TLS, with ``dashboards`` watching, on a DuckDB
    file or the PostgreSQL ``store``) through both phases; its figures."""
    workdir = Path(tempfile.mkdtemp(prefix="testfleet-dispatch-"))
    on_postgres = store != "duckdb"
    transport = getattr(args, "transport", "websocket")
    grpc = transport == "grpc"
    if grpc and on_postgres:
        raise SystemExit("--transport grpc: coordinators on PostgreSQL serve the WebSocket only")
    if args.codec == "protobuf" and not grpc:
        raise SystemExit("--codec protobuf travels over gRPC only: add --transport grpc")
    fleet = (
        PostgresLocalFleet(
            store,
            workdir,
            db=workdir / "unused.duckdb",
            log_dir=workdir,
            client_timeout=120,
            tls=tls,
        )
        if on_postgres
        else LocalFleet(
            workdir,
            db=workdir / "dispatch.duckdb",
            log_dir=workdir,
            client_timeout=120,
            tls=tls,
            grpc=grpc,
        )
    )
    db = fleet.db
    host_argv = [
        sys.executable,
        str(HERE),
        "--host-workers",
        fleet.grpc_url if grpc else fleet.url,
        "--transport",
        transport,
        "--workers",
        str(args.workers),
        "--slots",
        str(args.slots),
        "--codec",
        args.codec,
    ]
    if fleet.pki is not None:
        # Issued here, before the agents start: their process only reads them.
        for n in range(args.workers):
            issue_worker(fleet.pki, agent_id(n))
        host_argv += ["--pki", str(fleet.pki)]
    watchers: subprocess.Popen[str] | None = None
    try:
        fleet.start_coordinator()
        if fleet.pki is None:
            # Every worker needs a credential: without TLS, a worker token per
            # agent id, made through the API with the fleet's admin token (as
            # LocalFleet does for the workers it starts), read from files,
            # never the environment.
            for n in range(args.workers):
                fleet.worker_tokens.for_worker(agent_id(n))
            host_argv += ["--token-dir", str(fleet.worker_tokens.folder)]
        # One process hosts every agent (see host_workers), so the fleet waits
        # for a count of connected workers, not for named worker processes.
        fleet.start(
            "workers",
            host_argv,
            with_credentials=False,  # worker agents: no API token (see LocalFleet)
        )
        fleet.wait_for_workers(count=args.workers, timeout=120)
        client = fleet.client
        watchers = start_dashboards(fleet, dashboards) if dashboards else None
        documents = [
            {"task_id": f"noop-{n:06d}", "type": "simulated", "config": {"duration_seconds": 0}}
            for n in range(args.tasks)
        ]
        coordinator_pid = fleet.processes[COORDINATOR].pid
        cpu_before = process_cpu_seconds(coordinator_pid)
        started = time.perf_counter()
        for start in range(0, len(documents), args.batch):
            client.submit(documents[start : start + args.batch])
        submitted = time.perf_counter()
        # Polled gently: the figures come from the coordinator's own timestamps,
        # and each poll is a query on the coordinator's database.
        while client.stats()["tasks"]["completed"] < args.tasks:
            time.sleep(0.25)
        finished = time.perf_counter()
        coordinator_cpu = process_cpu_seconds(coordinator_pid) - cpu_before
        # The measured phase is over: the dashboards close before phase 2.
        events_read = stop_dashboards(watchers) if watchers is not None else 0
        watchers = None
        stats = client.stats()
        # Phase 2, an idle fleet: one task per request, paced, to measure how
        # long dispatch itself takes when a worker is free (phase 1's latency is
        # mostly time spent waiting in a 10,000-task queue).
        for n in range(args.probe):
            client.submit([{"task_id": f"probe-{n:04d}", "type": "simulated"}])
            time.sleep(0.02)
        while client.stats()["tasks"]["completed"] < args.tasks + args.probe:
            time.sleep(0.25)
    except LocalFleetError as exc:
        raise SystemExit(f"{exc}\nlogs in {workdir}") from None
    finally:
        if watchers is not None:
            watchers.kill()
            watchers.wait()
        # The workers' process first, then the coordinator: its file is then free to read.
        try:
            fleet.stop_all(grace=30)
        finally:
            fleet.close()

    # The same SQL reads either database (PostgreSQL through DuckDB's extension).
    con = (
        attach_read_only(parse_dsn(store))
        if on_postgres
        else duckdb.connect(str(db), read_only=True)
    )

    def one_row(sql: str) -> tuple[Any, ...]:
        row = con.execute(sql).fetchone()
        assert row is not None, sql  # an aggregate always answers one row
        return row

    first_create, last_end = one_row(
        "SELECT epoch(min(create_time)), epoch(max(end_time)) FROM distributed_tasks "
        "WHERE task_id LIKE 'noop-%'"
    )

    def latencies_ms(prefix: str, until: str) -> list[float]:
        """Per task: from its commit as queued to ``until`` (an attempt time column)."""
        return [
            row[0] * 1000
            for row in con.execute(
                f"SELECT epoch(h.{until}) - epoch(t.create_time) FROM task_execution_history h "
                "JOIN distributed_tasks t USING (task_id) "
                f"WHERE t.task_id LIKE ? AND h.{until} IS NOT NULL",
                [prefix + "%"],
            ).fetchall()
        ]

    latencies = latencies_ms("noop-", "start_time")
    idle_latencies = latencies_ms("probe-", "accepted_time")
    attempts = one_row("SELECT count(*) FROM task_execution_history WHERE task_id LIKE 'noop-%'")[0]
    con.close()
    committed_span = last_end - first_create
    throughput = args.tasks / committed_span
    lines = [
        f"dispatch{' over TLS with worker certificates and tokens' if tls else ''}: "
        f"{args.workers} workers x {args.slots} slots, {args.tasks} zero-work tasks, "
        f"{'gRPC' if grpc else 'WebSocket'}, codec {args.codec}, {os.cpu_count()} cores, "
        f"store {'PostgreSQL' if on_postgres else 'DuckDB'}"
        + (f", {dashboards} dashboards on the event stream" if dashboards else ""),
        f"  end-to-end (first task committed -> last result committed): "
        f"{throughput:,.0f} tasks/s over {committed_span:.2f} s",
        f"  client wall (first POST -> all completed seen): "
        f"{args.tasks / (finished - started):,.0f} tasks/s over {finished - started:.2f} s "
        f"(submitting took {submitted - started:.2f} s)",
        f"  submit->assignment latency, {args.tasks:,} queued at once: "
        f"p50 {statistics.median(latencies):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms",
    ]
    lines.append(
        f"  coordinator CPU (user + system, first POST -> all completed seen): "
        f"{coordinator_cpu:.2f} s, {1e6 * coordinator_cpu / args.tasks:.0f} us per task"
    )
    if dashboards:
        lines.append(f"  the dashboards read {events_read} events between them")
    if idle_latencies:
        lines.append(
            f"  submit->accepted by a worker, {len(idle_latencies)} paced single tasks: "
            f"p50 {statistics.median(idle_latencies):.1f} ms, "
            f"p99 {percentile(idle_latencies, 0.99):.1f} ms"
        )
    lines.append(
        f"  attempts recorded: {attempts}; store commits: {stats['loop']['commits']} "
        f"({stats['loop']['events']} events in {stats['loop']['turns']} turns, "
        f"{stats['loop']['commit_seconds']:.2f} s committing)"
    )
    return Figures(tls=tls, tasks_per_second=throughput, dashboards=dashboards, lines=lines)


if __name__ == "__main__":
    main()

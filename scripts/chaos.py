#!/usr/bin/env python3
"""Fault harness for a three-node Sluice cluster, in the spirit of Jepsen's Kafka tests: it
runs a workload while it kills, pauses, cuts off and restarts nodes, then checks the history
for the anomalies a replicated log must never show.

Usage:
  chaos.py run [--short | --faults N] [--seed S] [--binary PATH] [--out DIR] [--unclean]
  chaos.py check HISTORY     the checker alone, on a saved history
  chaos.py selftest          the checker on made-up histories, one per anomaly

`run` starts three nodes (each a broker and a controller voter) as real processes, creates a
topic (RF 3, min.insync.replicas=2), and runs an idempotent acks=all producer writing unique
values ("p<n>", value n to partition n mod P) and a group of consumers reading from the
beginning. Meanwhile it injects faults drawn from a seeded RNG (the seed is printed; --seed
reproduces the schedule, though the victims depend on where leaders happen to be):

  kill-leader       SIGKILL the leader of a random partition, restart it once others lead
  kill-controller   SIGKILL the active controller, restart it once another node is active
  pause-leader      SIGSTOP a leader for longer than broker.session.timeout.ms, then SIGCONT
  partition-leader  cut a leader off from the other nodes (clients still reach it), heal
  rolling-restart   SIGTERM and start again each node in turn

After each fault the harness heals it and waits, with a deadline, until the cluster is healthy
(every node ready, one active controller, every node's Metadata agreeing that each partition
has a leader and a full ISR, no under-replicated partition in any node's metrics) and an
acknowledgement arrived on every affected partition. The unavailability of a fault is the time
from injecting it to the first acknowledgement, on each partition the victim led, of a value
sent after the fault (the largest over those partitions).

Partitions need network namespaces: each node runs in its own namespace (slch<slot>-n<i>),
joined by a veth pair to a bridge (slch<slot>-br, 10.77.<slot>.1/24) in the root namespace,
node i at 10.77.<slot>.(10+i); the clients stay in the root namespace. Cutting node i off adds
blackhole routes between it and every other node, on both sides. The slot is claimed with a
lock file under /run/sluice-chaos, so parallel runs do not collide, and leftovers of a dead run
in the same slot are removed first. Without root (or CAP_NET_ADMIN) the nodes run on 127.0.0.1
and the partition fault is left out, which the output says.

At the end the producer stops, the group drains to the end of every partition, a fresh
consumer outside the group reads every partition from offset 0 (the authoritative log), and the
checker runs. Everything is recorded in HISTORY (JSON lines) in the output directory, next to
the nodes' logs (node-<i>.log, output of every start, with the harness's clock) and the
clients' log (clients.log). The exit status is 0 when the checker found nothing and no node
failed, 1 on an anomaly or a broker failure (a crash, a panic in a node's log even when the
process went on or exited 0, a non-zero exit after SIGTERM, no recovery within the deadline,
a group that does not drain), 2 when the harness itself could not run.

The checker counts:
  lost-write            an acknowledged value missing from the authoritative log
  duplicate             one value at two positions (acks, reads, authoritative log together)
  inconsistent-offsets  one (topic, partition, offset) seen with two values, by anyone, at any
                        time; this includes an acknowledged offset holding another value in the
                        authoritative log
  nonmonotonic-poll     within one session, a poll returned an offset at or below the one the
                        same consumer polled before
  poll-skip             within one session, consecutive polls jumped over offsets that exist in
                        the authoritative log
  group-skip            an offset of the authoritative log, below where the group drained to,
                        that no consumer of the group ever read
  vanished-read         a value a consumer read that the authoritative log does not hold at all
                        (it was visible, then gone)

A session is one consumer's hold of one partition: it starts with an assignment that includes
the partition and ends with its revocation or loss. Only consecutive polls inside one session
must advance by exactly the next offset of the log. The first poll of a session may start
anywhere: a new assignment resumes from the committed offset, which may lie below what this or
another consumer already read (a redelivery, allowed under at-least-once), or wherever another
member stopped. Skips between sessions are not lost silently though: group-skip catches an
offset the group as a whole never read. A position reset inside a session (OFFSET_OUT_OF_RANGE
after a truncation) is counted as nonmonotonic: it only happens when a consumer saw offsets the
log later lost.

The checker also warns, without counting it as an anomaly, about lost commits: a session whose
first poll lies below an offset commit the group had acknowledged before the assignment. That
is allowed by the rules above (the consumers only read records again) but means the
coordinator forgot acknowledged commits.

Each anomaly is attributed to the last fault injected before the value's acknowledgement or
failure (or before the poll), which says where to look in the node logs.

--unclean passes unclean.leader.election.enable=true to every node and, instead of the random
schedule, provokes the case where losing acknowledged writes is allowed: on a topic with two
replicas and min.insync.replicas=1 it pauses the follower until the ISR is the leader alone,
produces with acks=all, kills the leader, resumes the stale follower first (so it can only
lead by an unclean election), produces again, and restarts the old leader. The checker should
then report lost writes (exit status 1 is the expected outcome in this mode).

Requires Python 3 and confluent-kafka (the tests' virtualenv has it); `check` needs only the
standard library.
"""

import argparse
import bisect
import collections
import ctypes
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODES = 3
TOPIC = "chaos"
UNCLEAN_TOPIC = "chaos-unclean"
KINDS = ["kill-leader", "kill-controller", "pause-leader", "partition-leader", "rolling-restart"]

# Failure detection settings: short, so a fault is noticed within seconds, and well above a
# Raft election (about a second).
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_INTERVAL_MS = 500
REPLICA_LAG_MS = 5000

READY_LIMIT_S = 60  # a node prints "ready" within this
RECOVERY_LIMIT_S = 90  # the cluster is healthy again within this after a fault is healed
MOVE_LIMIT_S = 30  # leaderships leave a failed node within this
DRAIN_LIMIT_S = 60  # the group reads to the end within this
STOP_LIMIT_S = 30  # a node exits within this after SIGTERM

START = time.monotonic()


def now():
    return round(time.monotonic() - START, 3)


def say(message):
    try:
        print(f"[{now():8.1f}s] {message}", flush=True)
    except BrokenPipeError:
        pass  # a reader such as `head` went away; the run and its cleanup go on


def wait_for(limit_s, condition, interval_s=0.2):
    """Polls `condition` until it returns something true or `limit_s` passes; returns the last
    result (falsy on timeout)."""
    deadline = time.monotonic() + limit_s
    while True:
        result = condition()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval_s)


class HarnessError(Exception):
    """The harness itself could not go on (not a finding about the broker)."""


# ---------------------------------------------------------------------------------------------
# History


class History:
    """JSON lines, one event each, written by every thread under one lock; `t` is seconds since
    the harness started."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "w", buffering=1)
        self.lock = threading.Lock()

    def write(self, event_type, **fields):
        fields = {"type": event_type, "t": now(), **fields}
        line = json.dumps(fields, separators=(",", ":"))
        with self.lock:
            self.file.write(line + "\n")

    def close(self):
        with self.lock:
            self.file.close()


def read_history(path):
    with open(path) as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # The last line of a run killed mid-write may be torn; nothing else may.
                print(f"history line {number} is not JSON; ignored", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Network: loopback, or one namespace per node behind a bridge


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Loopback:
    """Every node on 127.0.0.1 with ports chosen by the kernel; no partitions possible."""

    netns = False

    def __init__(self):
        self.ports = [(free_port(), free_port(), free_port()) for _ in range(NODES)]

    def host(self, node):
        return "127.0.0.1"

    def port(self, node, which):
        return self.ports[node][("client", "controller", "metrics").index(which)]

    def command(self, node, argv):
        return argv

    def describe(self):
        return "127.0.0.1 (no network namespaces: the partition fault is left out)"

    def close(self):
        pass


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Namespaces:
    """One network namespace per node, joined to a bridge in the root namespace."""

    netns = True
    prefix = "slch"
    lock_dir = Path("/run/sluice-chaos")
    slots = 64

    def __init__(self):
        self.lock_fd = None
        self.cut_off = set()
        self.slot = self._claim_slot()
        self.base = f"{self.prefix}{self.slot}"
        self.subnet = f"10.77.{self.slot}"
        self._remove_leftovers()
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _subnet_taken(self, slot):
        """Whether a device that is not ours already has an address in the slot's subnet."""
        ours = f"{self.prefix}{slot}-"
        for line in ip("-o", "-4", "addr", "show").stdout.splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[3].startswith(f"10.77.{slot}.") and not fields[1].startswith(ours):
                return True
        return False

    def _claim_slot(self):
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        for slot in range(self.slots):
            fd = os.open(self.lock_dir / f"slot-{slot}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if self._subnet_taken(slot):
                os.close(fd)
                continue
            self.lock_fd = fd
            return slot
        raise HarnessError(f"no free slot among {self.slots} under {self.lock_dir}")

    def namespace(self, node):
        return f"{self.base}-n{node}"

    def host(self, node):
        return f"{self.subnet}.{10 + node}"

    def port(self, node, which):
        return {"client": 9092, "controller": 9093, "metrics": 9101}[which]

    def command(self, node, argv):
        return ["ip", "netns", "exec", self.namespace(node), *argv]

    def describe(self):
        return f"network namespaces {self.base}-n0..{NODES - 1}, bridge {self.base}-br ({self.subnet}.0/24)"

    def _remove_leftovers(self):
        """Removes what a dead run in this slot left: its processes (only those inside its own
        namespaces), namespaces and links. We hold the slot's lock, so no live run owns them."""
        mine = f"{self.base}-"
        for line in ip("netns", "list").stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if not name.startswith(mine):
                continue
            for pid in ip("netns", "pids", name, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            ip("netns", "del", name, check=False)
            say(f"removed leftover namespace {name}")
        for line in ip("-o", "link", "show").stdout.splitlines():
            fields = line.split(":")
            name = fields[1].strip().split("@")[0] if len(fields) > 1 else ""
            if name.startswith(mine):
                ip("link", "del", name, check=False)
                say(f"removed leftover link {name}")

    def _create(self):
        bridge = f"{self.base}-br"
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{self.subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for node in range(NODES):
            namespace = self.namespace(node)
            outside, inside = f"{self.base}-v{node}", f"{self.base}-p{node}"
            ip("netns", "add", namespace)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", namespace)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            run_in = ["netns", "exec", namespace, "ip"]
            ip(*run_in, "link", "set", inside, "name", "eth0")
            ip(*run_in, "addr", "add", f"{self.host(node)}/24", "dev", "eth0")
            ip(*run_in, "link", "set", "eth0", "up")
            ip(*run_in, "link", "set", "lo", "up")

    def cut(self, node):
        """Blackhole routes between `node` and every other node, on both sides."""
        for other in range(NODES):
            if other != node:
                ip("netns", "exec", self.namespace(node), "ip", "route", "add", "blackhole", f"{self.host(other)}/32")
                ip("netns", "exec", self.namespace(other), "ip", "route", "add", "blackhole", f"{self.host(node)}/32")
        self.cut_off.add(node)

    def heal(self, node):
        for other in range(NODES):
            if other != node:
                ip("netns", "exec", self.namespace(node), "ip", "route", "del", "blackhole", f"{self.host(other)}/32", check=False)
                ip("netns", "exec", self.namespace(other), "ip", "route", "del", "blackhole", f"{self.host(node)}/32", check=False)
        self.cut_off.discard(node)

    def close(self):
        if self.lock_fd is None:
            return
        for node in list(self.cut_off):
            self.heal(node)
        for node in range(NODES):
            ip("netns", "del", self.namespace(node), check=False)
        ip("link", "del", f"{self.base}-br", check=False)
        os.close(self.lock_fd)
        self.lock_fd = None


def open_network(use_netns):
    if not use_netns:
        return Loopback(), "namespaces switched off (--no-netns)"
    if os.geteuid() != 0:
        return Loopback(), "not root"
    try:
        return Namespaces(), None
    except (subprocess.CalledProcessError, OSError) as error:
        detail = getattr(error, "stderr", "") or error
        return Loopback(), f"network namespaces unavailable: {str(detail).strip()}"


# ---------------------------------------------------------------------------------------------
# Talking to nodes without a client library: Metadata v1 from one chosen node, and metrics


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self):
        length = self.take(">h")
        if length < 0:
            return None
        text = self.data[self.at:self.at + length].decode()
        self.at += length
        return text

    def array(self, item):
        return [item() for _ in range(max(self.take(">i"), 0))]


def metadata_of(host, port, timeout_s=2.0):
    """This node's own view (Metadata v1, every topic): brokers, controller, and per topic and
    partition the leader, replicas and ISR. None when the node does not answer in time."""
    client_id = b"sluice-chaos"
    body = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            connection.sendall(struct.pack(">i", len(body)) + body)
            head = recv_exactly(connection, 4)
            data = recv_exactly(connection, struct.unpack(">i", head)[0])
    except OSError:
        return None
    reader = Reader(data)
    reader.take(">i")  # correlation id
    brokers = {}
    for _ in range(max(reader.take(">i"), 0)):
        node_id, host_name, port_number = reader.take(">i"), reader.string(), reader.take(">i")
        reader.string()  # rack
        brokers[node_id] = (host_name, port_number)
    controller = reader.take(">i")
    topics = {}
    for _ in range(max(reader.take(">i"), 0)):
        error, name = reader.take(">h"), reader.string()
        reader.take(">b")  # is_internal
        partitions = {}
        for _ in range(max(reader.take(">i"), 0)):
            partition_error, index, leader = reader.take(">hii")
            replicas = reader.array(lambda: reader.take(">i"))
            isr = reader.array(lambda: reader.take(">i"))
            partitions[index] = {"leader": leader, "replicas": replicas, "isr": isr, "error": partition_error}
        topics[name] = {"error": error, "partitions": partitions}
    return {"brokers": brokers, "controller": controller, "topics": topics}


def recv_exactly(connection, count):
    chunks, left = [], count
    while left > 0:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise OSError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def metrics_of(host, port, timeout_s=2.0):
    """The node's unlabelled samples, name to value; None when it does not answer."""
    try:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        connection.close()
    except (OSError, http.client.HTTPException):
        return None
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) == 2:
            try:
                samples[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return samples


ACTIVE_CONTROLLER = "kafka_controller_kafkacontroller_activecontrollercount"
UNDER_REPLICATED = "kafka_server_replicamanager_underreplicatedpartitions"
OFFLINE = "kafka_controller_kafkacontroller_offlinepartitionscount"


# ---------------------------------------------------------------------------------------------
# Nodes and the cluster


def die_with_parent():
    """In the child before exec: SIGKILL it when the harness dies, so no node outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Node:
    def __init__(self, index, cluster):
        self.index = index
        self.cluster = cluster
        self.process = None
        self.ready = threading.Event()
        self.starts = 0
        self.expected_exit = True  # set False while running; the harness sets it before stopping
        self.log_path = cluster.out / f"node-{index}.log"
        self.log = open(self.log_path, "a", buffering=1)
        self.data = cluster.out / f"node-{index}" / "data"

    def start(self):
        assert not self.alive(), f"node {self.index} is already running"
        self.starts += 1
        self.ready.clear()
        argv = self.cluster.net.command(self.index, [str(self.cluster.binary), "serve", *self.cluster.override_args(self.index)])
        self.log.write(f"{now():9.3f} ----- start {self.starts}: {' '.join(argv)}\n")
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the harness, which stops the nodes itself
            env={**os.environ, "NO_COLOR": "1"},
            preexec_fn=die_with_parent,
        )
        self.expected_exit = False
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        self.cluster.history.write("node-start", node=self.index, pid=self.process.pid, start=self.starts)

    def _pump(self, process):
        """Copies the node's output to its log with timestamps, and notices `ready` and exits."""
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.write(f"{now():9.3f} {line}\n")
            if line == "ready":
                self.ready.set()
        code = process.wait()
        self.log.write(f"{now():9.3f} ----- exited with status {code}\n")
        if not self.expected_exit and process is self.process:
            self.cluster.unexpected_exit(self, code)

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def signal(self, number):
        self.process.send_signal(number)

    def kill(self):
        self.expected_exit = True
        if self.alive():
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self):
        """SIGTERM and wait for the exit; returns the exit status, or None after SIGKILL."""
        self.expected_exit = True
        if not self.alive():
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            return self.process.wait(timeout=STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None

    def wait_ready(self, limit_s=READY_LIMIT_S):
        return wait_for(limit_s, lambda: self.ready.is_set() or not self.alive()) and self.ready.is_set()

    def tail(self, lines=8):
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


class Cluster:
    def __init__(self, args, net, out, history):
        self.binary = Path(args.binary).resolve()
        self.net = net
        self.out = out
        self.history = history
        self.extra = list(args.override)
        if args.unclean:
            self.extra.append("unclean.leader.election.enable=true")
        self.log_level = args.log
        self.failures = []  # broker failures (not checker anomalies): crashes, stuck recoveries
        self.nodes = [Node(i, self) for i in range(NODES)]

    def override_args(self, node):
        net = self.net
        voters = ",".join(f"{i}@{net.host(i)}:{net.port(i, 'controller')}" for i in range(NODES))
        host = net.host(node)
        pairs = [
            f"node.id={node}",
            "process.roles=broker,controller",
            f"listeners=PLAINTEXT://{host}:{net.port(node, 'client')},CONTROLLER://{host}:{net.port(node, 'controller')}",
            f"controller.quorum.voters={voters}",
            f"log.dirs={self.nodes[node].data}",
            f"sluice.metrics.address={host}:{net.port(node, 'metrics')}",
            "sluice.reactors=2",
            "default.replication.factor=3",
            "min.insync.replicas=2",
            "offsets.topic.replication.factor=3",
            f"broker.session.timeout.ms={SESSION_TIMEOUT_MS}",
            f"broker.heartbeat.interval.ms={HEARTBEAT_INTERVAL_MS}",
            f"replica.lag.time.max.ms={REPLICA_LAG_MS}",
            "group.initial.rebalance.delay.ms=500",
            *self.extra,
        ]
        args = ["--log", self.log_level]
        for pair in pairs:
            args += ["--override", pair]
        return args

    def bootstrap(self):
        return ",".join(f"{self.net.host(i)}:{self.net.port(i, 'client')}" for i in range(NODES))

    def unexpected_exit(self, node, code):
        message = f"node {node.index} exited by itself with status {code}"
        self.failures.append(message)
        self.history.write("node-crash", node=node.index, status=code)
        say(f"FAILURE: {message}; last lines of {node.log_path.name}:")
        for line in node.tail():
            print(f"    {line}", flush=True)

    def start_all(self):
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            if not node.wait_ready():
                tail = "\n    ".join(node.tail())
                raise HarnessError(f"node {node.index} did not print ready within {READY_LIMIT_S} s:\n    {tail}")

    def metadata(self, node):
        return metadata_of(self.net.host(node), self.net.port(node, "client"))

    def metrics(self, node):
        return metrics_of(self.net.host(node), self.net.port(node, "metrics"))

    def active_controllers(self, among=range(NODES)):
        active = []
        for node in among:
            if not self.nodes[node].alive():
                continue
            samples = self.metrics(node)
            if samples and samples.get(ACTIVE_CONTROLLER) == 1:
                active.append(node)
        return active

    def observer(self, excluding):
        """A node to ask about the cluster while `excluding` is failed: the active controller
        among the others when there is one, else the first other node that answers."""
        others = [n for n in range(NODES) if n != excluding and self.nodes[n].alive()]
        active = self.active_controllers(others)
        return active[0] if active else (others[0] if others else None)

    def health(self):
        """None when healthy, else the first reason it is not."""
        for node in self.nodes:
            if not node.alive():
                return f"node {node.index} is down"
            if not node.ready.is_set():
                return f"node {node.index} is not ready"
        views = {}
        samples = {}
        for node in range(NODES):
            views[node] = self.metadata(node)
            samples[node] = self.metrics(node)
            if views[node] is None:
                return f"node {node} does not answer Metadata"
            if samples[node] is None:
                return f"node {node} does not serve metrics"
        active = [n for n in range(NODES) if samples[n].get(ACTIVE_CONTROLLER) == 1]
        if len(active) != 1:
            return f"active controllers per metrics: {active}"
        for node, view in views.items():
            if sorted(view["brokers"]) != list(range(NODES)):
                return f"node {node} lists brokers {sorted(view['brokers'])}"
            if view["controller"] != active[0]:
                return f"node {node} names controller {view['controller']}, metrics say {active[0]}"
        first = views[0]["topics"]
        for node, view in views.items():
            for name, topic in view["topics"].items():
                for index, partition in topic["partitions"].items():
                    if partition["leader"] < 0:
                        return f"{name}-{index} has no leader (node {node}'s view)"
                    if sorted(partition["isr"]) != sorted(partition["replicas"]):
                        return f"{name}-{index} ISR {partition['isr']} of replicas {partition['replicas']} (node {node}'s view)"
                    seen = first.get(name, {}).get("partitions", {}).get(index)
                    if seen is None or (seen["leader"], sorted(seen["isr"])) != (partition["leader"], sorted(partition["isr"])):
                        return f"nodes 0 and {node} disagree on {name}-{index}"
        lagging = {n: samples[n].get(UNDER_REPLICATED, 0) for n in range(NODES)}
        if any(lagging.values()):
            return f"under-replicated partitions per node: {lagging}"
        return None

    def wait_healthy(self, limit_s=RECOVERY_LIMIT_S):
        """Waits until healthy; returns (healthy, seconds waited, last reason)."""
        began = time.monotonic()
        reasons = []

        def healthy():
            reason = self.health()
            reasons.append(reason)
            return reason is None

        ok = wait_for(limit_s, healthy, interval_s=0.25)
        return ok, time.monotonic() - began, reasons[-1] if reasons else None

    def leaders(self, view, topic=TOPIC):
        partitions = view["topics"].get(topic, {}).get("partitions", {}) if view else {}
        return {index: p["leader"] for index, p in partitions.items()}

    def close(self):
        for node in self.nodes:
            if node.process is None or not node.alive():
                continue
            status = node.stop()
            if status != 0:
                message = f"node {node.index} exited with status {status} after the final SIGTERM" if status is not None else f"node {node.index} did not exit within {STOP_LIMIT_S} s of the final SIGTERM"
                self.failures.append(message)
                say(f"FAILURE: {message}")
        for node in self.nodes:
            node.log.close()
        self.failures.extend(self.panics())

    def panics(self):
        """Every panic a node's log shows, with the assertion line that follows it."""
        found = []
        for node in self.nodes:
            lines = node.log_path.read_text(errors="replace").splitlines()
            for number, line in enumerate(lines):
                if "panicked at" in line:
                    detail = lines[number + 1].strip().split(" ", 1)[-1] if number + 1 < len(lines) else ""
                    found.append(f"node {node.index} panicked ({node.log_path.name} line {number + 1}): {line.strip().split(' ', 1)[-1]} {detail}")
        return found


# ---------------------------------------------------------------------------------------------
# Clients: the producer, the group's consumers, the authoritative reader


def client_logger(out):
    import logging

    logger = logging.getLogger("clients")
    if not logger.handlers:
        handler = logging.FileHandler(out / "clients.log")
        handler.setFormatter(logging.Formatter("%(relativeCreated)9.0f %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Watch:
    """Waits for the first acknowledgement, per partition, of a value sent after `since`."""

    def __init__(self, since, partitions):
        self.since = since
        self.pending = set(partitions)
        self.delays = {}

    def done(self):
        return not self.pending


class ProducerThread(threading.Thread):
    def __init__(self, bootstrap, history, partitions, rate, logger):
        super().__init__(daemon=True, name="producer")
        self.bootstrap = bootstrap
        self.history = history
        self.partitions = partitions
        self.rate = rate
        self.logger = logger
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.watches = []
        self.acked = 0
        self.failed = 0
        self.sent = 0
        self.fatal = None
        self.error = None

    def config(self):
        return {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30000,
            "request.timeout.ms": 10000,
            "error_cb": self.on_error,
            "logger": self.logger,
        }

    def on_error(self, error):
        self.history.write("producer-error", error=str(error), fatal=error.fatal())
        if error.fatal():
            self.fatal = str(error)

    def delivered(self, error, message, value, sent):
        if error is not None:
            self.failed += 1
            self.history.write("fail", value=value, topic=message.topic(), partition=message.partition(), error=error.name(), retriable=error.retriable())
            return
        self.acked += 1
        partition = message.partition()
        self.history.write("ack", value=value, topic=message.topic(), partition=partition, offset=message.offset(), sent=sent)
        with self.lock:
            for watch in self.watches:
                if partition in watch.pending and sent >= watch.since:
                    watch.pending.discard(partition)
                    watch.delays[partition] = now() - watch.since

    def watch(self, since, partitions):
        watch = Watch(since, partitions)
        with self.lock:
            self.watches.append(watch)
        return watch

    def forget(self, watch):
        with self.lock:
            self.watches.remove(watch)

    def run(self):
        try:
            self._run()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            self.error = repr(error)

    def _run(self):
        from confluent_kafka import Producer

        producer = Producer(self.config())
        interval = 1.0 / self.rate
        next_send = time.monotonic()
        number = 0
        while not self.stop_event.is_set():
            if self.fatal:
                # An idempotent producer cannot go on after a fatal error: what it held fails
                # (recorded as such), and a new producer with a new id takes over.
                say(f"producer: fatal error ({self.fatal}); starting a new producer")
                self.history.write("producer-replaced", reason=self.fatal)
                producer.purge()
                producer.flush(5)
                producer = Producer(self.config())
                self.fatal = None
            delay = next_send - time.monotonic()
            if delay > 0:
                producer.poll(min(delay, 0.1))
                continue
            next_send += interval
            value = f"p{number}"
            partition = number % self.partitions
            sent = now()
            try:
                producer.produce(TOPIC, value.encode(), partition=partition, on_delivery=lambda e, m, v=value, s=sent: self.delivered(e, m, v, s))
            except BufferError:
                producer.poll(0.1)
                next_send = time.monotonic()
                continue
            self.history.write("send", value=value, partition=partition)
            number += 1
            self.sent = number
            producer.poll(0)
        # Stop: give what is in flight a deadline, then fail what is left (recorded as failed,
        # that is indeterminate: it may still have been written).
        left = producer.flush(45)
        if left:
            self.history.write("producer-unresolved", count=left)
            producer.purge()
            producer.flush(5)


def produce_batch(bootstrap, history, topic, prefix, first, count, logger, limit_s=30):
    """`count` values to partition 0 of `topic` with acks=all; returns how many were acked."""
    from confluent_kafka import Producer

    acked = []

    def delivered(error, message, value):
        if error is not None:
            history.write("fail", value=value, topic=topic, partition=0, error=error.name(), retriable=error.retriable())
        else:
            acked.append(value)
            history.write("ack", value=value, topic=topic, partition=0, offset=message.offset(), sent=now())

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "message.timeout.ms": int(limit_s * 1000), "logger": logger})
    for number in range(first, first + count):
        value = f"{prefix}{number}"
        producer.produce(topic, value.encode(), partition=0, on_delivery=lambda e, m, v=value: delivered(e, m, v))
        history.write("send", value=value, partition=0, topic=topic)
    producer.flush(limit_s + 5)
    return len(acked)


class ConsumerThread(threading.Thread):
    """One member of the group: records every assignment change and every record it polls."""

    def __init__(self, index, bootstrap, group, history, progress, logger):
        super().__init__(daemon=True, name=f"consumer-{index}")
        self.index = index
        self.bootstrap = bootstrap
        self.group = group
        self.history = history
        self.progress = progress  # shared: (topic, partition) -> highest offset the group read
        self.logger = logger
        self.stop_event = threading.Event()
        self.assignment = set()
        self.read = 0
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as error:  # noqa: BLE001 - reported by the main thread
            self.error = repr(error)

    def _on_assign(self, consumer, partitions):
        self.assignment = {p.partition for p in partitions}
        self.history.write("assign", consumer=self.index, topic=TOPIC, partitions=sorted(self.assignment))

    def _on_revoke(self, consumer, partitions):
        self.history.write("revoke", consumer=self.index, topic=TOPIC, partitions=sorted(p.partition for p in partitions))
        self.assignment = set()

    def _on_lost(self, consumer, partitions):
        self.history.write("lost", consumer=self.index, topic=TOPIC, partitions=sorted(p.partition for p in partitions))
        self.assignment = set()

    def _on_commit(self, error, partitions):
        offsets = [[p.partition, p.offset] for p in partitions if p.error is None and p.offset >= 0]
        self.history.write("commit", consumer=self.index, topic=TOPIC, error=str(error) if error else None, offsets=offsets)

    def _run(self):
        from confluent_kafka import Consumer

        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            "group.id": self.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "partition.assignment.strategy": "roundrobin",
            "error_cb": lambda e: self.history.write("consumer-error", consumer=self.index, error=str(e)),
            "on_commit": self._on_commit,
            "logger": self.logger,
        })
        consumer.subscribe([TOPIC], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        while not self.stop_event.is_set():
            for message in consumer.consume(500, 0.5):
                if message.error():
                    self.history.write("consumer-error", consumer=self.index, error=str(message.error()))
                    continue
                key = (message.topic(), message.partition())
                self.history.write("read", consumer=self.index, topic=key[0], partition=key[1], offset=message.offset(), value=message.value().decode(errors="replace"))
                self.read += 1
                with PROGRESS_LOCK:
                    if message.offset() > self.progress.get(key, -1):
                        self.progress[key] = message.offset()
        consumer.close()
        self.history.write("consumer-closed", consumer=self.index)


PROGRESS_LOCK = threading.Lock()


def high_watermarks(bootstrap, partitions_by_topic, logger):
    """The high watermark of every partition, from the leaders."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-chaos-watermarks", "enable.auto.commit": False, "logger": logger})
    try:
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for topic, count in partitions_by_topic.items()
            for p in range(count)
        }
    finally:
        consumer.close()


def final_read(bootstrap, partitions_by_topic, history, logger, limit_s=60):
    """Reads every partition from offset 0 to its high watermark with a fresh consumer outside
    any group: the authoritative log. Returns the partitions it could not finish."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    ends = high_watermarks(bootstrap, partitions_by_topic, logger)
    history.write("final-ends", ends=[[t, p, end] for (t, p), end in sorted(ends.items())])
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "sluice-chaos-final",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "logger": logger,
    })
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p) in ends])
    pending = {key for key, end in ends.items() if end > 0}
    deadline = time.monotonic() + limit_s
    while pending and time.monotonic() < deadline:
        for message in consumer.consume(500, 0.5):
            key = (message.topic(), message.partition())
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    history.write("final-error", topic=key[0], partition=key[1], error=str(message.error()))
                elif message.offset() >= ends[key]:
                    pending.discard(key)
                continue
            if message.offset() < ends[key]:
                history.write("final", topic=key[0], partition=key[1], offset=message.offset(), value=message.value().decode(errors="replace"))
            if message.offset() + 1 >= ends[key]:
                pending.discard(key)
    consumer.close()
    history.write("final-done", incomplete=[[t, p] for (t, p) in sorted(pending)])
    return pending


# ---------------------------------------------------------------------------------------------
# Faults


class Run:
    """The state a fault needs: the cluster, the workload, the RNG and the history."""

    def __init__(self, args, cluster, net, history, producer, rng):
        self.args = args
        self.cluster = cluster
        self.net = net
        self.history = history
        self.producer = producer
        self.rng = rng
        self.count = 0
        self.results = []  # (kind, unavailability in s or None, recovery in s or None)

    def pick_leader(self):
        """A random partition's leader, and every partition of the topic it leads."""
        node = self.cluster.observer(excluding=None)
        leaders = self.cluster.leaders(self.cluster.metadata(node)) if node is not None else {}
        if not leaders:
            raise HarnessError("no partition leaders in Metadata")
        partition = self.rng.choice(sorted(leaders))
        victim = leaders[partition]
        return victim, sorted(p for p, l in leaders.items() if l == victim)

    def moved_away(self, victim, partitions):
        """Whether the others fenced `victim` and every partition it led has another leader, in
        the view of a node other than the victim."""
        node = self.cluster.observer(excluding=victim)
        view = self.cluster.metadata(node) if node is not None else None
        if view is None or victim in view["brokers"]:
            return False
        leaders = self.cluster.leaders(view)
        return all(leaders.get(p, -1) not in (-1, victim) for p in partitions)

    def hold(self, minimum_s, condition):
        """Keeps a fault in place for at least `minimum_s` and until `condition` holds (or
        MOVE_LIMIT_S passes); returns the seconds until the condition held, or None."""
        began = time.monotonic()
        held = wait_for(MOVE_LIMIT_S, condition, interval_s=0.2)
        took = time.monotonic() - began if held else None
        wait_for(max(0.0, minimum_s - (time.monotonic() - began)), lambda: False, interval_s=0.1)
        return took

    def begin(self, kind, victim, partitions, **detail):
        self.count += 1
        affected = partitions or list(range(self.args.partitions))
        watch = self.producer.watch(now(), affected)
        self.history.write("fault", id=self.count, kind=kind, node=victim, partitions=affected, **detail)
        return watch

    def finish(self, kind, victim, watch, moved_s):
        """Waits until the cluster is healthy and every affected partition took a write."""
        ok, recovery_s, reason = self.cluster.wait_healthy()
        if ok:
            wait_for(MOVE_LIMIT_S, watch.done)
        self.producer.forget(watch)
        unavailable = max(watch.delays.values()) if watch.done() else None
        if not ok:
            self.cluster.failures.append(f"fault {self.count} ({kind} of node {victim}): not healthy within {RECOVERY_LIMIT_S} s: {reason}")
        elif unavailable is None:
            self.cluster.failures.append(f"fault {self.count} ({kind} of node {victim}): partitions {sorted(watch.pending)} took no write within {MOVE_LIMIT_S} s of recovery")
        self.results.append((kind, unavailable, recovery_s if ok else None))
        self.history.write("fault-done", id=self.count, kind=kind, node=victim, healthy=ok, reason=reason, recovery_s=round(recovery_s, 3), unavailable_s=unavailable, moved_s=moved_s)
        moved = "n/a" if kind == "rolling-restart" else (f"{moved_s:.1f} s" if moved_s is not None else "never")
        shown = f"{unavailable:.2f} s" if unavailable is not None else "no write"
        state = f"healthy after {recovery_s:.1f} s" if ok else f"NOT HEALTHY after {recovery_s:.0f} s ({reason})"
        say(f"fault {self.count}: {kind} of node {victim}: leaders moved {moved}, writes unavailable {shown}, {state}")
        return ok

    def kill_leader(self):
        victim, partitions = self.pick_leader()
        watch = self.begin("kill-leader", victim, partitions)
        self.cluster.nodes[victim].kill()
        moved = self.hold(self.rng.uniform(0, 1.5), lambda: self.moved_away(victim, partitions))
        self.restart(victim)
        return self.finish("kill-leader", victim, watch, moved)

    def kill_controller(self):
        active = self.cluster.active_controllers()
        if len(active) != 1:
            raise HarnessError(f"active controllers before the fault: {active}")
        victim = active[0]
        view = self.cluster.metadata(victim)
        partitions = sorted(p for p, l in self.cluster.leaders(view).items() if l == victim)
        watch = self.begin("kill-controller", victim, partitions)
        self.cluster.nodes[victim].kill()
        others = [n for n in range(NODES) if n != victim]
        moved = self.hold(self.rng.uniform(0, 1.5), lambda: len(self.cluster.active_controllers(others)) == 1 and self.moved_away(victim, partitions))
        self.restart(victim)
        return self.finish("kill-controller", victim, watch, moved)

    def pause_leader(self):
        victim, partitions = self.pick_leader()
        watch = self.begin("pause-leader", victim, partitions)
        node = self.cluster.nodes[victim]
        node.signal(signal.SIGSTOP)
        minimum = SESSION_TIMEOUT_MS / 1000 + self.rng.uniform(0.5, 2.5)
        moved = self.hold(minimum, lambda: self.moved_away(victim, partitions))
        node.signal(signal.SIGCONT)
        self.history.write("heal", id=self.count, action="SIGCONT", node=victim)
        return self.finish("pause-leader", victim, watch, moved)

    def partition_leader(self):
        victim, partitions = self.pick_leader()
        watch = self.begin("partition-leader", victim, partitions)
        self.net.cut(victim)
        minimum = SESSION_TIMEOUT_MS / 1000 + self.rng.uniform(0.5, 2.5)
        moved = self.hold(minimum, lambda: self.moved_away(victim, partitions))
        self.net.heal(victim)
        self.history.write("heal", id=self.count, action="routes removed", node=victim)
        return self.finish("partition-leader", victim, watch, moved)

    def rolling_restart(self):
        for victim in range(NODES):
            view = self.cluster.metadata(victim)
            partitions = sorted(p for p, l in self.cluster.leaders(view).items() if l == victim)
            watch = self.begin("rolling-restart", victim, partitions)
            status = self.cluster.nodes[victim].stop()
            if status != 0:
                message = f"node {victim} exited with status {status} after SIGTERM" if status is not None else f"node {victim} did not exit within {STOP_LIMIT_S} s of SIGTERM"
                self.cluster.failures.append(message)
                say(f"FAILURE: {message}")
            self.history.write("stopped", id=self.count, node=victim, status=status)
            self.restart(victim)
            if not self.finish("rolling-restart", victim, watch, None):
                return False
        return True

    def restart(self, victim):
        node = self.cluster.nodes[victim]
        node.start()
        if not node.wait_ready():
            self.cluster.failures.append(f"node {victim} not ready within {READY_LIMIT_S} s of its restart")
        self.history.write("heal", id=self.count, action="restarted", node=victim)

    def inject(self, kind):
        return {
            "kill-leader": self.kill_leader,
            "kill-controller": self.kill_controller,
            "pause-leader": self.pause_leader,
            "partition-leader": self.partition_leader,
            "rolling-restart": self.rolling_restart,
        }[kind]()


def schedule(args, rng, kinds):
    if args.short:
        order = list(kinds)
        rng.shuffle(order)
        return order
    return [rng.choice(kinds) for _ in range(args.faults)]


def unclean_scenario(run, bootstrap, logger):
    """Provokes an unclean election: the only in-sync replica dies holding acknowledged writes,
    and a stale follower becomes the leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    cluster, history = run.cluster, run.history
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logger})
    future = admin.create_topics([NewTopic(UNCLEAN_TOPIC, num_partitions=1, replication_factor=2, config={"min.insync.replicas": "1"})])[UNCLEAN_TOPIC]
    future.result(timeout=30)
    view = wait_for(30, lambda: (lambda v: v if v and UNCLEAN_TOPIC in v["topics"] else None)(cluster.metadata(0)))
    if not view:
        raise HarnessError(f"{UNCLEAN_TOPIC} does not appear in Metadata")
    partition = view["topics"][UNCLEAN_TOPIC]["partitions"][0]
    leader = partition["leader"]
    follower = next(r for r in partition["replicas"] if r != leader)
    say(f"unclean: {UNCLEAN_TOPIC}-0 led by node {leader}, follower node {follower}")
    acked = produce_batch(bootstrap, history, UNCLEAN_TOPIC, "a", 0, 50, logger)
    say(f"unclean: {acked}/50 acknowledged with the follower in sync; pausing follower {follower}")
    history.write("fault", id=0, kind="unclean-pause-follower", node=follower, partitions=[0])
    cluster.nodes[follower].signal(signal.SIGSTOP)

    def isr_is_leader():
        node = cluster.observer(excluding=follower)
        v = cluster.metadata(node) if node is not None else None
        p = v and v["topics"].get(UNCLEAN_TOPIC, {}).get("partitions", {}).get(0)
        return p is not None and p["isr"] == [leader]

    if not wait_for(MOVE_LIMIT_S, isr_is_leader):
        say("unclean: the ISR did not shrink to the leader alone; going on anyway")
    acked = produce_batch(bootstrap, history, UNCLEAN_TOPIC, "b", 0, 50, logger)
    say(f"unclean: {acked}/50 acknowledged by the leader alone; killing leader {leader}")
    history.write("fault", id=0, kind="unclean-kill-leader", node=leader, partitions=[0])
    cluster.nodes[leader].kill()
    cluster.nodes[follower].signal(signal.SIGCONT)
    say(f"unclean: stale follower {follower} resumed first; waiting for it to lead")

    def follower_leads():
        node = cluster.observer(excluding=leader)
        v = cluster.metadata(node) if node is not None else None
        p = v and v["topics"].get(UNCLEAN_TOPIC, {}).get("partitions", {}).get(0)
        return p is not None and p["leader"] == follower

    elected = wait_for(MOVE_LIMIT_S, follower_leads)
    history.write("unclean-election", happened=bool(elected), node=follower)
    if elected:
        acked = produce_batch(bootstrap, history, UNCLEAN_TOPIC, "c", 0, 20, logger)
        say(f"unclean: follower {follower} leads (unclean election); {acked}/20 acknowledged there")
    else:
        say(f"unclean: no unclean election within {MOVE_LIMIT_S} s (the partition stays offline until its old leader returns)")
    run.restart(leader)
    say(f"unclean: old leader {leader} restarted")
    ok, seconds, reason = cluster.wait_healthy()
    if not ok:
        cluster.failures.append(f"unclean scenario: not healthy within {RECOVERY_LIMIT_S} s: {reason}")
    return bool(elected)


# ---------------------------------------------------------------------------------------------
# The run


def create_topic(bootstrap, cluster, partitions, logger):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logger})
    topic = NewTopic(TOPIC, num_partitions=partitions, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([topic])[TOPIC].result(timeout=30)


def commit_start(bootstrap, group, partitions, logger):
    """Commits offset 0 for every partition before the group's members start, so that no
    member begins with a ListOffsets lookup. librdkafka (2.16) keeps such a lookup queued for
    a leader that goes down, sends it once that broker is back, and when the late answer is
    FENCED_LEADER_EPOCH it restarts the lookup and moves a partition it has been reading
    since back to the earliest offset: a re-read the checker would blame on the brokers."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "logger": logger})
    try:
        offsets = [TopicPartition(TOPIC, p, 0) for p in range(partitions)]
        deadline = time.monotonic() + 30
        while True:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                return
            except Exception as error:  # noqa: BLE001 - a coordinator still loading retries
                if time.monotonic() > deadline:
                    raise HarnessError(f"cannot commit the group's start offsets: {error}") from error
                time.sleep(0.5)
    finally:
        consumer.close()


def unknown_key_warned(node, key):
    return any("unknown property" in line and key in line for line in node.log_path.read_text(errors="replace").splitlines())


def run(args):
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    out = Path(args.out) if args.out else REPO / "target" / "chaos" / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    say(f"seed {seed}; output in {out}")
    if not Path(args.binary).exists():
        raise HarnessError(f"no sluice binary at {args.binary} (build it, or pass --binary)")
    history = History(out / "history.jsonl")
    net, why_not = open_network(not args.no_netns)
    cluster = None
    workers = []
    try:
        kinds = [k for k in KINDS if net.netns or k != "partition-leader"]
        say(f"network: {net.describe()}" + (f" ({why_not})" if why_not else ""))
        history.write("run", seed=seed, args=vars(args), netns=net.netns, kinds=kinds)
        cluster = Cluster(args, net, out, history)
        say("phase: starting three nodes")
        cluster.start_all()
        if args.unclean and unknown_key_warned(cluster.nodes[0], "unclean.leader.election.enable"):
            say("NOTE: this sluice does not know unclean.leader.election.enable (it warned 'unknown property'); "
                "the scenario runs, but no unclean election can happen, so no loss is expected")
        ok, seconds, reason = cluster.wait_healthy(READY_LIMIT_S)
        if not ok:
            raise HarnessError(f"the new cluster is not healthy: {reason}")
        bootstrap = cluster.bootstrap()
        logger = client_logger(out)
        say(f"phase: creating topic {TOPIC} ({args.partitions} partitions, RF 3, min.insync.replicas=2)")
        create_topic(bootstrap, cluster, args.partitions, logger)
        ok, seconds, reason = cluster.wait_healthy(READY_LIMIT_S)
        if not ok:
            raise HarnessError(f"not healthy after creating the topic: {reason}")

        say(f"phase: workload: idempotent acks=all producer at {args.rate}/s, {args.consumers} consumers in one group")
        progress = {}
        group = f"chaos-{seed}-{os.getpid()}"
        commit_start(bootstrap, group, args.partitions, logger)
        consumers = [ConsumerThread(i, bootstrap, group, history, progress, logger) for i in range(args.consumers)]
        producer = ProducerThread(bootstrap, history, args.partitions, args.rate, logger)
        workers = [*consumers, producer]
        for worker in workers:
            worker.start()
        warm = wait_for(60, lambda: producer.acked > 0 and len(set().union(*(c.assignment for c in consumers))) == args.partitions)
        if not warm:
            raise HarnessError("the workload did not start: no acknowledgement or incomplete assignment within 60 s")

        state = Run(args, cluster, net, history, producer, rng)
        if args.unclean:
            say("phase: unclean-election scenario")
            unclean_scenario(state, bootstrap, logger)
            topics = {TOPIC: args.partitions, UNCLEAN_TOPIC: 1}
        else:
            plan = schedule(args, rng, kinds)
            say(f"phase: {len(plan)} faults: {' '.join(plan)}")
            for kind in plan:
                if not state.inject(kind):
                    say("the cluster did not recover; no further faults")
                    break
                for worker in workers:
                    if worker.error:
                        raise HarnessError(f"{worker.name} failed: {worker.error}")
            topics = {TOPIC: args.partitions}

        say(f"phase: stopping the producer ({producer.acked} acknowledged, {producer.failed} failed so far)")
        producer.stop_event.set()
        producer.join(60)
        say(f"producer: {producer.sent} sent, {producer.acked} acknowledged, {producer.failed} failed")
        ends = high_watermarks(bootstrap, {TOPIC: args.partitions}, logger)
        say(f"phase: draining the group to the high watermarks {[ends[(TOPIC, p)] for p in range(args.partitions)]}")
        drained = wait_for(DRAIN_LIMIT_S, lambda: all(progress.get(k, -1) + 1 >= end for k, end in ends.items()), interval_s=0.25)
        history.write("drain", ends=[[t, p, end] for (t, p), end in sorted(ends.items())], complete=bool(drained))
        if not drained:
            behind = {f"{t}-{p}": (progress.get((t, p), -1) + 1, end) for (t, p), end in ends.items() if progress.get((t, p), -1) + 1 < end}
            cluster.failures.append(f"the group did not drain within {DRAIN_LIMIT_S} s: (read to, end) {behind}")
        for consumer in consumers:
            consumer.stop_event.set()
        for consumer in consumers:
            consumer.join(30)
        say(f"consumers: {sum(c.read for c in consumers)} records polled")
        say("phase: authoritative read of every partition from offset 0")
        incomplete = final_read(bootstrap, topics, history, logger)
        if incomplete:
            cluster.failures.append(f"the authoritative read did not finish: {sorted(incomplete)}")
        history.write("end", faults=state.count, failures=cluster.failures)
    finally:
        for worker in workers:
            worker.stop_event.set()
        if cluster is not None:
            say("phase: stopping the nodes")
            cluster.close()
        net.close()
        history.close()

    say("phase: checking the history")
    report = check(read_history(out / "history.jsonl"))
    (out / "check.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    if state.results:
        print_faults(state.results, report)
    if cluster.failures:
        say("broker failures:")
        for failure in cluster.failures:
            print(f"    {failure}", flush=True)
    bad = report["anomaly_count"] > 0 or cluster.failures
    if bad:
        say(f"FAILED: seed {seed}; history kept in {out / 'history.jsonl'} (node logs beside it)")
        return 1
    if not args.keep_data:
        for node in range(NODES):
            shutil.rmtree(out / f"node-{node}", ignore_errors=True)
    say(f"OK: seed {seed}; no anomaly; history in {out / 'history.jsonl'}")
    return 0


def print_faults(results, report):
    by_kind = collections.defaultdict(list)
    for kind, unavailable, _recovery in results:
        by_kind[kind].append(unavailable)
    print(f"\nfaults injected: {len(results)}; records acknowledged: {report['acked']}; anomalies: {report['anomaly_count']}")
    print(f"{'fault':<18}{'count':>6}{'unavail. median':>17}{'max':>9}{'no write':>10}")
    for kind in KINDS:
        values = by_kind.get(kind)
        if not values:
            continue
        measured = [v for v in values if v is not None]
        median = f"{statistics.median(measured):.2f} s" if measured else "-"
        largest = f"{max(measured):.2f} s" if measured else "-"
        print(f"{kind:<18}{len(values):>6}{median:>17}{largest:>9}{len(values) - len(measured):>10}")
    print(flush=True)


# ---------------------------------------------------------------------------------------------
# The checker


ANOMALIES = ["lost-write", "duplicate", "inconsistent-offsets", "nonmonotonic-poll", "poll-skip", "group-skip", "vanished-read"]
EXAMPLES = 10


def check(events):
    """Counts the anomalies of a history (see the module's docstring for the rules)."""
    acks = {}  # value -> (topic, partition, offset)
    failed = set()
    log = collections.defaultdict(dict)  # (topic, partition) -> offset -> value
    final_done = None
    drain_ends = {}
    values_at = collections.defaultdict(set)  # (topic, partition, offset) -> values
    positions_of = collections.defaultdict(set)  # value -> positions
    sessions = collections.defaultdict(dict)  # consumer -> (topic, partition) -> session
    polls = []  # (consumer, session id, topic, partition, offset)
    group_read = collections.defaultdict(set)  # (topic, partition) -> offsets
    reads = []
    faults = []  # (time, id, kind, node), in order
    resolved_at = {}  # value -> when the producer learnt its fate (acknowledged or failed)
    session_ids = 0
    counts = collections.Counter()
    committed = collections.defaultdict(lambda: -1)  # (topic, partition) -> highest acknowledged commit
    session_floor = {}  # session id -> the highest commit acknowledged before its assignment
    lost_commits = []
    for event in events:
        kind = event["type"]
        if kind == "ack":
            acks[event["value"]] = (event["topic"], event["partition"], event["offset"])
            resolved_at[event["value"]] = event["t"]
        elif kind == "fail":
            failed.add(event["value"])
            resolved_at[event["value"]] = event["t"]
        elif kind == "final":
            log[(event["topic"], event["partition"])][event["offset"]] = event["value"]
        elif kind == "final-done":
            final_done = event
        elif kind == "drain":
            drain_ends = {(t, p): end for t, p, end in event["ends"]}
        elif kind == "assign":
            for p in event["partitions"]:
                session_ids += 1
                sessions[event["consumer"]][(event["topic"], p)] = session_ids
                session_floor[session_ids] = committed[(event["topic"], p)]
        elif kind == "commit":
            if event["error"] is None:
                for p, offset in event["offsets"]:
                    key = (event["topic"], p)
                    committed[key] = max(committed[key], offset)
        elif kind in ("revoke", "lost"):
            for p in event["partitions"]:
                sessions[event["consumer"]].pop((event["topic"], p), None)
        elif kind == "read":
            key = (event["topic"], event["partition"])
            session = sessions[event["consumer"]].get(key)
            if session is None:
                # Outside any assignment (the client should never do this): its own session.
                session_ids += 1
                session = sessions[event["consumer"]][key] = session_ids
                counts["read-outside-assignment"] += 1
            if session_floor.pop(session, -1) > event["offset"]:
                lost_commits.append({"consumer": event["consumer"], "partition": key, "committed": committed[key], "resumed_at": event["offset"], "t": event["t"]})
            polls.append((event["consumer"], session, key, event["offset"], event["t"]))
            group_read[key].add(event["offset"])
            reads.append(event)
        elif kind == "fault":
            counts["faults"] += 1
            faults.append((event["t"], event["id"], event["kind"], event["node"]))

    anomalies = {name: [] for name in ANOMALIES}
    fault_times = [f[0] for f in faults]

    def during(when):
        """The last fault injected at or before `when`: where to look for the cause."""
        if when is None:
            return None
        index = bisect.bisect_right(fault_times, when) - 1
        return None if index < 0 else f"fault {faults[index][1]} ({faults[index][2]} of node {faults[index][3]})"

    def observe(topic, partition, offset, value, source):
        if offset is None or offset < 0:
            return
        position = (topic, partition, offset)
        values_at[position].add(value)
        positions_of[value].add(position)

    for (topic, partition), offsets in log.items():
        for offset, value in offsets.items():
            observe(topic, partition, offset, value, "final")
    for value, (topic, partition, offset) in acks.items():
        observe(topic, partition, offset, value, "ack")
    for event in reads:
        observe(event["topic"], event["partition"], event["offset"], event["value"], "read")

    in_log = {value for offsets in log.values() for value in offsets.values()}
    for value, position in acks.items():
        if value not in in_log:
            anomalies["lost-write"].append({"value": value, "acked_at": position, "after": during(resolved_at.get(value))})
    for value, positions in positions_of.items():
        if len(positions) > 1:
            anomalies["duplicate"].append({"value": value, "positions": sorted(positions), "after": during(resolved_at.get(value))})
    for position, values in values_at.items():
        if len(values) > 1:
            first_resolved = min((resolved_at[v] for v in values if v in resolved_at), default=None)
            anomalies["inconsistent-offsets"].append({"position": position, "values": sorted(values), "after": during(first_resolved)})
    for event in reads:
        if event["value"] not in in_log:
            anomalies["vanished-read"].append({"value": event["value"], "read_at": (event["topic"], event["partition"], event["offset"]), "consumer": event["consumer"], "after": during(resolved_at.get(event["value"]))})

    sorted_log = {key: sorted(offsets) for key, offsets in log.items()}
    previous = {}
    for consumer, session, key, offset, when in polls:
        last = previous.get((consumer, session))
        previous[(consumer, session)] = offset
        if last is None:
            continue
        if offset <= last:
            anomalies["nonmonotonic-poll"].append({"consumer": consumer, "partition": key, "from": last, "to": offset, "after": during(when)})
            continue
        known = sorted_log.get(key, [])
        skipped = bisect.bisect_left(known, offset) - bisect.bisect_right(known, last)
        if skipped > 0:
            anomalies["poll-skip"].append({"consumer": consumer, "partition": key, "from": last, "to": offset, "skipped": skipped, "after": during(when)})

    for key, end in drain_ends.items():
        unread = [o for o in sorted_log.get(key, []) if o < end and o not in group_read[key]]
        if unread:
            anomalies["group-skip"].append({"partition": key, "unread": len(unread), "first": unread[:EXAMPLES], "after": during(resolved_at.get(log[key][unread[0]]))})

    anomaly_count = sum(len(found) for found in anomalies.values())
    by_fault = collections.Counter(f"{name} after {found['after']}" for name, list_ in anomalies.items() for found in list_)
    return {
        "valid": anomaly_count == 0 and final_done is not None and not final_done["incomplete"],
        "anomaly_count": anomaly_count,
        "counts": {name: len(found) for name, found in anomalies.items()},
        "examples": {name: found[:EXAMPLES] for name, found in anomalies.items() if found},
        "by_fault": dict(sorted(by_fault.items())),
        "acked": len(acks),
        "failed": len(failed - set(acks)),
        "log_records": sum(len(offsets) for offsets in log.values()),
        "group_reads": len(reads),
        "faults": counts["faults"],
        "reads_outside_assignment": counts["read-outside-assignment"],
        "lost_commits": len(lost_commits),
        "lost_commit_examples": [dict(example, after=during(example.pop("t"))) for example in lost_commits[:EXAMPLES]],
        "records_reread": len(reads) - sum(len(offsets) for offsets in group_read.values()),
        "authoritative_read_complete": final_done is not None and not final_done["incomplete"],
    }


def print_report(report):
    print(f"\nchecker: {report['acked']} acknowledged, {report['failed']} failed (indeterminate), "
          f"{report['log_records']} records in the authoritative log, {report['group_reads']} polled by the group")
    if not report["authoritative_read_complete"]:
        print("checker: the authoritative read is missing or incomplete; lost-write counts are not trustworthy")
    for name in ANOMALIES:
        found = report["counts"][name]
        print(f"  {name:<22}{found:>8}")
        for example in report["examples"].get(name, [])[:3]:
            print(f"      e.g. {json.dumps(example)}")
    if report["lost_commits"]:
        print(f"  warning: {report['lost_commits']} sessions resumed below an offset commit the group had acknowledged "
              f"(lost commits; not counted as anomalies); {report['records_reread']} records polled again")
        for example in report["lost_commit_examples"][:3]:
            print(f"      e.g. {json.dumps(example)}")
    if report["by_fault"]:
        print("  where they started (the last fault injected before the value's ack or failure, or the read):")
        for where, count in report["by_fault"].items():
            print(f"    {count:>6}  {where}")
    print(flush=True)


def self_test():
    """The checker against small made-up histories, one per anomaly, so that a checker that
    cannot fail is noticed."""

    def history(*events):
        return [dict(event, t=float(i)) for i, event in enumerate(events)]

    def ack(value, partition, offset):
        return {"type": "ack", "value": value, "topic": "x", "partition": partition, "offset": offset}

    def final(partition, offset, value):
        return {"type": "final", "topic": "x", "partition": partition, "offset": offset, "value": value}

    def read(consumer, partition, offset, value):
        return {"type": "read", "consumer": consumer, "topic": "x", "partition": partition, "offset": offset, "value": value}

    def assign(consumer, *partitions):
        return {"type": "assign", "consumer": consumer, "topic": "x", "partitions": list(partitions)}

    def revoke(consumer, *partitions):
        return {"type": "revoke", "consumer": consumer, "topic": "x", "partitions": list(partitions)}

    done = {"type": "final-done", "incomplete": []}
    drained = {"type": "drain", "ends": [["x", 0, 3]], "complete": True}
    log = [final(0, 0, "a"), final(0, 1, "b"), final(0, 2, "c")]
    clean = [ack("a", 0, 0), ack("b", 0, 1), ack("c", 0, 2), assign(0, 0), read(0, 0, 0, "a"), read(0, 0, 1, "b"),
             revoke(0, 0), assign(1, 0), read(1, 0, 1, "b"), read(1, 0, 2, "c"), drained, *log, done]
    cases = {
        None: clean,
        "lost-write": [ack("z", 0, 3), *clean],
        "duplicate": [*clean[:-1], final(0, 3, "a"), {"type": "drain", "ends": [["x", 0, 3]]}, done],
        "inconsistent-offsets": [ack("q", 0, 1), *clean[1:]] + [final(0, 3, "q")],
        "nonmonotonic-poll": [*clean[:6], read(0, 0, 0, "a"), *clean[6:]],
        "poll-skip": [*clean[:4], read(0, 0, 0, "a"), read(0, 0, 2, "c"), *clean[6:]],
        "group-skip": [*clean[:3], assign(0, 0), read(0, 0, 0, "a"), revoke(0, 0), assign(1, 0), read(1, 0, 2, "c"), drained, *log, done],
        "vanished-read": [*clean[:5], read(0, 0, 1, "b"), read(0, 0, 2, "c"), read(0, 0, 3, "gone"), *clean[6:]],
    }
    failures = 0
    for expected, events in cases.items():
        report = check(history(*events))
        found = {name for name, count in report["counts"].items() if count}
        want = {expected} if expected else set()
        if expected == "inconsistent-offsets":
            want.add("duplicate")  # q is at 1 by its ack and at 3 in the log
        status = "ok" if found == want else "WRONG"
        failures += found != want
        print(f"{status:>5}  {expected or 'clean history'}: found {sorted(found) or 'nothing'}")
    commit = [assign(0, 0), read(0, 0, 0, "a"), read(0, 0, 1, "b"),
              {"type": "commit", "consumer": 0, "topic": "x", "error": None, "offsets": [[0, 2]]},
              revoke(0, 0), assign(1, 0), read(1, 0, 0, "a")]
    lost = check(history(*commit))["lost_commits"]
    failures += lost != 1
    print(f"{'ok' if lost == 1 else 'WRONG':>5}  lost commit: {lost} found")
    return 1 if failures else 0


def check_command(args):
    report = check(read_history(args.history))
    print_report(report)
    print(json.dumps({"valid": report["valid"], "counts": report["counts"]}))
    return 0 if report["anomaly_count"] == 0 else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog="See the top of this file for the rules.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start a cluster, inject faults, check")
    size = run_parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="one fault of each kind available (CI)")
    size.add_argument("--faults", type=int, default=10, help="faults to draw at random (default 10)")
    run_parser.add_argument("--seed", type=int, help="seed of the fault schedule (printed when drawn)")
    run_parser.add_argument("--binary", default=os.environ.get("SLUICE_BINARY", str(REPO / "target" / "release" / "sluice")), help="the sluice binary (default $SLUICE_BINARY or target/release/sluice)")
    run_parser.add_argument("--out", help="output directory (default target/chaos/<time>-seed<seed>)")
    run_parser.add_argument("--partitions", type=int, default=4)
    run_parser.add_argument("--consumers", type=int, default=2)
    run_parser.add_argument("--rate", type=float, default=200, help="values produced per second")
    run_parser.add_argument("--unclean", action="store_true", help="provoke an unclean leader election instead of the schedule")
    run_parser.add_argument("--no-netns", action="store_true", help="run on 127.0.0.1 without network namespaces")
    run_parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra node property")
    run_parser.add_argument("--log", default="info", help="the nodes' log filter (default info)")
    run_parser.add_argument("--keep-data", action="store_true", help="keep the nodes' data directories after a clean run")
    check_parser = commands.add_parser("check", help="check a saved history")
    check_parser.add_argument("history")
    commands.add_parser("selftest", help="run the checker on made-up histories with known anomalies")
    args = parser.parse_args()
    if args.command == "selftest":
        return self_test()
    if args.command == "check":
        return check_command(args)

    def interrupted(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    try:
        return run(args)
    except HarnessError as error:
        say(f"harness error: {error}")
        return 2
    except KeyboardInterrupt:
        say("interrupted; nodes stopped and namespaces removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""gpuprofd's main loop: the request socket, the live-data socket, the continuous sampler and the jobs.

``Daemon`` builds everything at start (the store, the runner, the policy, the sampler) and moves frames;
what a request gets back is handlers.py's business."""

from __future__ import annotations

import getpass
import grp
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from gpuprof.client.wire import protocol
from gpuprof.client.wire.errors import ConfigError, GpuprofError
from gpuprof.client.wire.messages import GpuInfo
from gpuprof.sampler import SamplerConfig, open_sampler
from gpuprof.sampler.device import read_inventory
from gpuprof.sampler.library import resolve
from gpuprof.sampler.sim import SimulatedNvml

from ..config import DaemonConfig
from .clocks import ClockControl, ClockJournal
from .handlers import INTERNAL, Handlers, Node, live_body
from .history import SampleHistory
from .identity import ZAP_DOMAIN, Caller, Callers, ZapHandler, frame_uid
from .jobs import JobRunner
from .keys import KeyStore, server_keypair
from .limits import RequestLimits, ServiceTimes
from .logbound import Bugs
from .logbound import install as bound_log
from .notify import sd_notify
from .policy import Policy
from .processes import WorkerLimits
from .store import JobStore
from .topics import allowed_topic

log = logging.getLogger("gpuprofd")
TICK_S = 0.05  # check timeouts and start queued jobs this often (samples are published more often)
BATCH = 64  # requests (or subscriptions) handled before the loop polls everything again: no flood starves it
ROUTER_RCVHWM = 64  # requests queued per connection while the daemon is busy (each up to max_message_bytes)


def _bind(socket: zmq.Socket[bytes], endpoint: str, group: str) -> None:
    """Bind; an ipc socket file is made group ``group``, mode 0660 (0600 when there is no such group)."""
    if not endpoint.startswith("ipc://"):
        socket.bind(endpoint)
        return
    path = Path(endpoint.removeprefix("ipc://"))
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a stale socket file from a daemon that died
    old_umask = os.umask(0o177)  # no moment with the file open to all
    try:
        socket.bind(endpoint)
    finally:
        os.umask(old_umask)
    gid = _group_id(group)
    if gid is None or (os.geteuid() != 0 and gid not in (os.getegid(), *os.getgroups())):
        if group:  # no such group, or one an unprivileged daemon may not give its files
            log.warning(
                "socket %s is usable by %s only (group %r not applied)", path, getpass.getuser(), group
            )
        return
    os.chown(path, -1, gid)
    path.chmod(0o660)


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid if name else None
    except KeyError:
        return None


class Daemon:
    """One gpuprofd: owns the GPUs' sampler, serves requests, runs jobs."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        bound_log(log)  # before anything a client sends can reach a log line
        self.bugs = Bugs(log)
        os.umask(0o077)  # the job database, traces and job directories are the daemon's alone
        self.library = resolve(simulate=config.simulate)
        described, self.unreadable = read_inventory(self.library, config.gpus)
        self.inventory = [GpuInfo.from_dict(gpu) for gpu in described]
        for index, error in self.unreadable.items():  # a lost GPU must not cost the node its others
            log.error("GPU %d not served: NVML cannot read it (%s)", index, error)
        if not self.inventory:
            lost = ", ".join(f"GPU {index}: {error}" for index, error in self.unreadable.items())
            raise GpuprofError(f"no GPU to serve: NVML cannot read any ({lost})")
        self.gpus = [gpu.index for gpu in self.inventory]
        state_dir = Path(config.state_dir)
        self.store = JobStore(str(state_dir))
        left_running = self.store.list(state="running", limit=10_000)
        interrupted = self.store.mark_running_interrupted("gpuprofd stopped while the job ran")
        if interrupted:
            log.warning("marked %d job(s) interrupted by the previous daemon's end", len(interrupted))
        self.history = SampleHistory(seconds=config.history_s, rate_hz=config.rate_hz, gpus=len(self.gpus))
        self.context = zmq.Context()
        # Before any socket binds: no connection goes unidentified. tcp clients are known by their CURVE key.
        self.keys = KeyStore(config.keys_dir) if config.tcp_endpoint else None
        self.zap = ZapHandler(self.context, curve_users=self.keys)
        self.callers = Callers()
        self.policy = Policy(config)
        self.service_times = ServiceTimes()
        self.limits = RequestLimits(
            config.request_rate_per_user,
            config.request_time_share_per_user,
            exempt_uids=frozenset({0, os.getuid()}),
        )
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes + 4096)
        self.router.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # XPUB in manual mode: each subscription arrives here with its connection's user, and the daemon
        # applies only what that user may see (their own jobs' topics, every GPU's samples).
        self.pub = self.context.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        self.pub.setsockopt(zmq.XPUB_MANUAL, 1)
        self.pub.setsockopt(zmq.SNDHWM, config.pub_hwm)
        # A subscription is one byte and a topic: a larger message drops its connection unread.
        self.pub.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_SUBSCRIPTION_BYTES)
        self.pub.setsockopt(zmq.LINGER, 0)
        limits = WorkerLimits.from_config(config.worker_memory_limit_mb, config.worker_output_limit_mb)
        self.clocks = ClockControl(self.library, ClockJournal(state_dir))
        for line in self.clocks.reset_all():  # what a daemon that died left changed
            log.warning("clocks left changed by the previous gpuprofd: %s", line)
        self.runner = JobRunner(
            self.store,
            state_dir,
            self.library,
            self._publish_job,
            limits=limits,
            clocks=self.clocks if config.allow_dvfs else None,
            inventory=self.inventory,
        )
        stopped = self.runner.stop_orphans(left_running)
        if stopped:
            log.warning(
                "stopped %d worker(s) the previous gpuprofd left running: pids %s", len(stopped), stopped
            )
        self.sampler = open_sampler(
            SamplerConfig(
                tuple(self.gpus),
                rate_hz=config.rate_hz,
                energy_rate_hz=config.energy_rate_hz,
                realtime_priority=config.sampler_realtime_priority,
            ),
            self.library,
        )
        if self.library.simulated:
            self._share_simulated_gpu()
        self.batches_published = 0
        self._stopping = False
        self.handlers = Handlers(
            config,
            self.store,
            self.runner,
            self.policy,
            Node(self.inventory, self.library.simulated, self.unreadable),
            self.history,
            publish_job=self._publish_job,
            limits=self.limits,
            bugs=self.bugs,
            loop_stats=self._loop_stats,
            service_times=self.service_times,
        )

    def _loop_stats(self) -> dict[str, Any]:
        """The stats only the loop knows: its sampler's, and what it published."""
        return {
            "sampler": self.sampler.stats().as_dict(),
            "publish": {
                "interval_ms": self.config.publish_interval_ms,
                "hwm": self.config.pub_hwm,
                "batches": self.batches_published,
            },
        }

    def _share_simulated_gpu(self) -> None:
        """Workers drive the simulated GPU's load through its state file, as real ones drive a real GPU
        through /dev/nvidia*: under a root daemon the users group may read and write it."""
        path = SimulatedNvml(self.library.path).state_path
        self.runner.sim_state_path = path
        gid = _group_id(self.config.users_group)
        if os.geteuid() == 0 and gid is not None:
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)

    def serve(self, ready: Any = None) -> None:
        """Bind, then serve until SIGTERM or SIGINT; ``ready()`` is called once the sockets are bound."""
        _bind(self.router, self.config.endpoint, self.config.socket_group)
        _bind(self.pub, self.config.publish_endpoint, self.config.socket_group)
        if self.config.tcp_endpoint:
            self._bind_tcp()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop())
        self.sampler.start()
        realtime_error = self.sampler.stats().realtime_error
        if realtime_error:
            log.warning("sampler runs at normal priority: %s (needs CAP_SYS_NICE)", realtime_error)
        log.info(
            "gpuprofd serving %s (live data %s) on %d %s GPU(s)",
            self.config.endpoint,
            self.config.publish_endpoint,
            len(self.gpus),
            "SIMULATED" if self.library.simulated else "real",
        )
        if ready is not None:
            ready()
        sd_notify(
            f"READY=1\nSTATUS=serving {len(self.gpus)} {'simulated ' if self.library.simulated else ''}GPU(s)"
        )
        try:
            self._loop()
        finally:
            sd_notify("STOPPING=1")
            self.runner.shutdown("gpuprofd stopped while the job ran")
            for line in self.clocks.reset_all():
                log.warning("clocks still changed at shutdown, reset: %s", line)
            self.sampler.close()
            self.router.close()
            self.pub.close()
            self.zap.close()
            self.context.term()

    def _bind_tcp(self) -> None:
        """The remote endpoints, CURVE only: options set now apply to these binds, not the ipc ones."""
        _public, secret = server_keypair(self.config.server_key, create=True)
        for socket, endpoint in (
            (self.router, self.config.tcp_endpoint),
            (self.pub, self.config.tcp_publish_endpoint),
        ):
            socket.setsockopt(zmq.CURVE_SERVER, 1)
            socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
            try:
                socket.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ConfigError(f"cannot bind {endpoint}: {exc}") from None
        keys = self.keys.entries() if self.keys else []
        log.info(
            "remote clients: %s and %s, CURVE; %d user key(s) in %s",
            self.config.tcp_endpoint,
            self.config.tcp_publish_endpoint,
            len(keys),
            self.config.keys_dir,
        )

    def stop(self) -> None:
        self._stopping = True

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)  # subscriptions
        poller.register(self.zap.socket, zmq.POLLIN)
        publish_s = self.config.publish_interval_ms / 1000
        next_publish = next_tick = time.monotonic()
        while not self._stopping:
            channels = self.runner.channels()
            for fd in channels:
                poller.register(fd, zmq.POLLIN)
            timeout_ms = math.ceil(max(0.0, min(next_publish, next_tick) - time.monotonic()) * 1000)
            events = dict(poller.poll(timeout_ms))
            for fd, job in channels.items():
                if fd in events:
                    self._guarded(self.runner.read_markers, job)
                poller.unregister(fd)
            if self.zap.socket in events:
                self._guarded(self.zap.handle)
            if self.pub in events:
                self._guarded(self._serve_subscriptions)
            if self.router in events:
                self._guarded(self._serve_requests)
            now = time.monotonic()
            if now >= next_tick:
                self._guarded(self._tick)
                next_tick = time.monotonic() + TICK_S
                next_publish = time.monotonic() + publish_s
            elif now >= next_publish:
                self._guarded(self._drain_and_publish)
                next_publish = max(next_publish + publish_s, time.monotonic())  # steady, never a burst

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run one step of the loop; a bug in it is logged (once with its traceback) and the loop goes on."""
        try:
            step(*args)
        except Exception:
            self.bugs.log(str(getattr(step, "__name__", step)))

    def _drain_and_publish(self) -> None:
        """Move what the sampler recorded into the history and the running jobs, and publish it live."""
        samples, energy = self.sampler.drain()
        self.history.append(samples, energy)
        self.runner.feed(samples, energy, self.sampler.drain_driver_power())
        for gpu in self.gpus:
            own = samples[samples["gpu"] == gpu]
            if own.size:
                self.pub.send_multipart(
                    [
                        protocol.topic_for_gpu(gpu),
                        protocol.encode_publish("samples", self._live_body(gpu, own)),
                    ]
                )
                self.batches_published += 1

    def _tick(self) -> None:
        self._drain_and_publish()  # a job is finished only with every sample up to its end
        self.runner.check()
        self.runner.schedule(self.gpus)

    def _live_body(self, gpu: int, own: np.ndarray) -> dict[str, Any]:
        return live_body(gpu, own, self.library.simulated, self.handlers.running_job(gpu))

    def _serve_subscriptions(self) -> None:
        """Apply each (un)subscription as far as its connection's user may see (topics.py); the
        rest is dropped and logged. At most BATCH at a time."""
        for _ in range(BATCH):
            try:
                frame = self.pub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            data = frame.bytes
            if not data or data[0] not in (0, 1):
                continue
            identity = frame_uid(frame)
            caller = self.callers.get(*identity) if identity is not None else None
            topic = self._allowed_topic(caller, data[1:]) if caller is not None else None
            if topic is not None:
                self.pub.setsockopt(zmq.SUBSCRIBE if data[0] == 1 else zmq.UNSUBSCRIBE, topic)

    def _allowed_topic(self, caller: Caller, topic: bytes) -> bytes | None:
        """What a subscription to ``topic`` becomes for ``caller``; None when nothing of it may be seen."""
        if not self.policy.may_use(caller):
            log.warning(
                "ignored a subscription by %s (uid %d): not in the users group", caller.user, caller.uid
            )
            return None

        def owns(job_id: str) -> bool:
            record = self.store.get(job_id) if self.store.valid_id(job_id) else None
            return record is not None and self.policy.may_see(caller, record.uid)

        allowed = allowed_topic(topic, self.gpus, self.policy.is_admin(caller), owns)
        if allowed is None:
            log.warning(
                "ignored a subscription by %s (uid %d) to %s",
                caller.user,
                caller.uid,
                protocol.excerpt(topic),
            )
        return allowed

    def _publish_job(self, job_id: str, kind: str, body: dict[str, Any]) -> None:
        self.pub.send_multipart([protocol.topic_for_job(job_id), protocol.encode_publish(kind, body)])

    def _serve_requests(self) -> None:
        """Answer the requests waiting, at most BATCH of them; one that fails costs only itself."""
        for _ in range(BATCH):
            try:
                received = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(received) < 2:
                continue  # nothing to answer: not even an identity and a payload
            identity = received[0].bytes
            try:
                reply = self._reply_frames(received)
            except Exception:  # a bug must cost one request, never the daemon
                self.bugs.log("a request")
                reply = [protocol.encode_error(None, "internal", INTERNAL)]
            self.router.send_multipart([identity, *reply])

    def _reply_frames(self, received: list[zmq.Frame]) -> list[bytes]:
        """The frames that answer one received message (after its identity frame)."""
        identity = frame_uid(received[-1])
        envelope = [frame.bytes for frame in received[1:-1]]
        if envelope not in ([], [b""]):
            # Two requests in one message, or frames before one: refused whole rather than echoing
            # the extra frames and running the last. The reply is one frame, after the empty delimiter
            # where the message began with one (a REQ socket drops a reply without it).
            error = "a request is one frame, after an empty delimiter frame for a REQ socket"
            delimiter = [b""] if envelope[0] == b"" else []
            return [*delimiter, protocol.encode_error(None, "bad_request", error)]
        caller = self.callers.get(*identity) if identity is not None else None
        return [*envelope, self.handlers.answer(received[-1].bytes, caller)]

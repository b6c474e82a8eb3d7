"""`sitewatch run`: the supervisor (gunicorn's arbiter).

Knows processes, not SQL. Forks (spawn start method: children start clean, no
inherited threads or libpq connections) one producer and N consumers, restarts
them with exponential backoff, kills silent ones, and stops them gracefully.
Signal handlers only record the signal; the main loop acts on it.
"""

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import time
from dataclasses import dataclass

from .. import config, logs
from ..db import schema
from ..db.database import Database
from ..operations import sentry
from ..operations.supervision import Operations
from . import child

START_METHOD = "spawn"
BACKOFF_START = 0.5         # first restart delay, doubled on each consecutive failure
LOOP_TICK = 1.0             # main loop wakes at least this often


@dataclass
class ChildSlot:
    """One place in the process table and its restart state machine.

    States: RUNNING (process alive), BACKOFF (dead, restart at restart_at),
    STOPPED (not to be restarted: shutting down).
    """
    role: str
    process: multiprocessing.Process | None = None
    heartbeat: object = None
    stats: multiprocessing.connection.Connection | None = None   # read end of the child's stats pipe
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    state: str = "BACKOFF"
    killed: bool = False    # SIGKILLed for silence: a process with thousands of threads takes a while to go


@dataclass
class Retiring:
    """A child asked to stop while the program keeps running (SIGHUP, fewer consumers).

    Its slot already has a replacement; it gets the grace period to finish its
    in-flight checks, like on SIGTERM, and is killed at `deadline`.
    """
    role: str
    process: multiprocessing.Process
    stats: multiprocessing.connection.Connection | None
    deadline: float
    killed: bool = False


class Supervisor:
    def __init__(self, cfg, config_path, env, database):
        self.cfg = cfg
        self.config_path = config_path
        self.env = env
        self.cli_flags = {}
        self.database = database
        self.log = logs.get()
        self.mp = multiprocessing.get_context(START_METHOD)
        self.signals = []
        self.slots = []
        self.retiring = []
        self.stopping = False
        self.stop_deadline = None
        self.fatal = None
        self.summary = _Summary()
        self.ops = Operations()          # run() gives it the configured listener
        self.next_summary = time.monotonic() + cfg.supervisor.summary_interval

    # --- signals: handlers only record ----------------------------------------

    def install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._record_signal)

    def _record_signal(self, signum, frame):
        self.signals.append(signum)

    def handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP:
                self.handle_hup()
            elif signum == signal.SIGINT and self.stopping:
                self.handle_second_int()
            else:
                self.handle_term(signal.Signals(signum).name)

    def handle_term(self, name) -> None:
        if self.stopping:
            return
        grace = self.cfg.supervisor.grace_period
        self.log.info("stopping: finishing in-flight checks", signal=name, grace_period_s=grace)
        self.stopping = True
        self.stop_deadline = time.monotonic() + grace
        for slot in self.slots:
            slot.state = "STOPPED"
            self._signal(slot.process, signal.SIGTERM)
        for old in self.retiring:
            old.deadline = min(old.deadline, self.stop_deadline)

    def handle_second_int(self) -> None:
        self.log.warning("second SIGINT: stopping at once")
        self.stop_deadline = time.monotonic()

    def handle_hup(self) -> None:
        if self.stopping:
            return
        try:
            new = config.load(self.env, self.cli_flags, self.config_path, serves_web=True)
            fit_open_files(new, self.log)
        except Exception as e:
            self.log.error("SIGHUP: configuration not reloaded, keeping the old one", error=str(e))
            return
        if new.database.dsn != self.cfg.database.dsn or new.database.data_dir != self.cfg.database.data_dir:
            self.log.warning("SIGHUP: database settings changed; they take effect on the next start")
        if new.metrics.listen != self.cfg.metrics.listen:
            self.log.warning("SIGHUP: metrics.listen changed; it takes effect on the next start")
        self.cfg = new
        self.log.info("SIGHUP: configuration reloaded, restarting children", config=new.path)
        logs.configure(new.log.level, new.log.format, role="supervisor")   # children start with it
        # Replace every child at once (gunicorn's HUP): the old ones finish their in-flight
        # checks within the grace period while the new ones already claim, so a check that
        # hangs until its timeout cannot hold a consumer slot idle.
        self._resize()
        now = time.monotonic()
        for slot in self.slots:
            if slot.process is not None:
                self._retire(slot)
            slot.state = "BACKOFF"
            slot.restart_at = now

    # --- children ------------------------------------------------------------------

    def _resize(self) -> None:
        """One producer, one maintenance job, one notifier (alerts), consumer_count() consumers and a
        web child unless web.listen is empty; children no longer wanted are retired."""
        wanted = ["producer", "maintenance", "notifier"] + \
            [f"consumer-{i}" for i in range(1, self.consumer_count() + 1)]
        wanted += ["web"] if self.cfg.web.listen.strip() else []
        existing = {slot.role: slot for slot in self.slots}
        for slot in self.slots:
            if slot.role not in wanted and slot.process is not None:
                self._retire(slot)
        self.slots = [existing.get(role) or ChildSlot(role) for role in wanted]

    def _retire(self, slot: ChildSlot) -> None:
        """Ask the slot's child to stop gracefully; the slot is free for a replacement at once."""
        self._signal(slot.process, signal.SIGTERM)
        self.retiring.append(Retiring(slot.role, slot.process, slot.stats,
                                      time.monotonic() + self.cfg.supervisor.grace_period))
        slot.process = slot.stats = slot.heartbeat = None

    def consumer_count(self) -> int:
        return self.cfg.consumer.processes or usable_cpus()

    def spawn(self, slot: ChildSlot) -> None:
        self.ops.metrics.child_known(slot.role)
        slot.killed = False
        slot.heartbeat = self.mp.Value("d", time.monotonic(), lock=False)
        # One stats pipe per child, not a shared multiprocessing.Queue: a queue's writers share
        # a lock, and a child killed (-9, or stopped and then killed by the heartbeat check)
        # while holding it would block every other child's stats, and their exit, for good.
        reader, writer = self.mp.Pipe(duplex=False)
        slot.process = self.mp.Process(
            target=child.run, name=f"sitewatch {slot.role}",
            args=(slot.role, self.cfg, self.database.dsn, slot.heartbeat, writer, os.getpid()))
        slot.process.start()
        writer.close()   # the child holds the only write end: EOF when it exits
        slot.stats = reader
        slot.started_at = time.monotonic()
        slot.state = "RUNNING"

    @staticmethod
    def _signal(process, signum) -> None:
        if process is not None and process.is_alive():
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass

    def _release(self, process, stats) -> None:
        """Collect a dead child: its last stats, its exit status, its pipe."""
        self._drain(stats)
        if stats is not None:
            stats.close()
        process.join()
        process.close()

    def reap(self) -> None:
        """Notice dead children and decide: restart after backoff, or stop everything."""
        now = time.monotonic()
        for old in list(self.retiring):
            if not old.process.is_alive():
                self._release(old.process, old.stats)
                self.retiring.remove(old)
            elif now >= old.deadline and not old.killed:
                self.log.warning("grace period over, killing child", role=old.role, pid=old.process.pid)
                old.process.kill()
                old.killed = True
        for slot in self.slots:
            if slot.process is None or slot.process.is_alive():
                continue
            code = slot.process.exitcode
            self._release(slot.process, slot.stats)
            slot.process = slot.stats = slot.heartbeat = None
            if slot.state == "STOPPED" or self.stopping:
                continue
            if code == child.EXIT_BOOT_ERROR:
                self.fatal = f"{slot.role} cannot run (see its log line above); restarting would not help"
                self.log.error("fatal child error: stopping", role=slot.role, exit_code=code)
                self.handle_term("fatal")
                continue
            if now - slot.started_at >= self.cfg.supervisor.stable_after:   # it ran long enough: start over
                slot.failures = 0
            delay = min(self.cfg.supervisor.restart_backoff_max, BACKOFF_START * 2 ** slot.failures)
            slot.failures += 1
            self.ops.metrics.child_restarted(slot.role)
            slot.restart_at = now + delay
            self.log.warning("child died, restarting", role=slot.role, exit_code=code,
                             restart_in_s=delay, consecutive_failures=slot.failures)
            slot.state = "BACKOFF"

    def start_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.state == "BACKOFF" and now >= slot.restart_at and not self.stopping:
                self.spawn(slot)

    def check_heartbeats(self) -> None:
        now = time.monotonic()
        limit = self.cfg.supervisor.heartbeat_timeout
        for slot in self.slots:
            if slot.state == "RUNNING" and slot.process is not None and slot.process.is_alive():
                silent = now - slot.heartbeat.value
                if silent > limit and not slot.killed:
                    self.log.error("child silent, killing it", role=slot.role, silent_s=round(silent, 1))
                    slot.process.kill()
                    slot.killed = True

    def health_snapshot(self) -> list[tuple]:
        """(role, state, seconds since its last heartbeat) per slot, for /readyz."""
        now = time.monotonic()
        return [(slot.role, slot.state if slot.process is None or slot.process.is_alive() else "EXITED",
                 None if slot.heartbeat is None else now - slot.heartbeat.value) for slot in self.slots]

    # --- stats ---------------------------------------------------------------------

    def drain_stats(self) -> None:
        for slot in self.slots:
            self._drain(slot.stats)
        for old in self.retiring:
            self._drain(old.stats)

    def _drain(self, stats) -> None:
        try:
            while stats is not None and stats.poll():
                role, counters = pickle.loads(stats.recv_bytes())
                self.summary.add(role, counters)
                self.ops.metrics.fold(role, counters)
        except (EOFError, OSError):
            pass   # the child is gone; reap() closes the pipe

    def maybe_log_summary(self) -> None:
        now = time.monotonic()
        if now < self.next_summary:
            return
        self.next_summary = now + self.cfg.supervisor.summary_interval
        self.log.info("summary", **self.summary.take())

    # --- main loop -----------------------------------------------------------------

    def run(self) -> int:
        self.install_signals()
        self._resize()
        while True:
            self.handle_signals()
            self.drain_stats()
            self.reap()
            if self.stopping:
                alive = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
                alive += [old.process for old in self.retiring if old.process.is_alive()]
                if not alive:
                    break
                if time.monotonic() >= self.stop_deadline:
                    roles = {s.process.pid: s.role for s in self.slots if s.process is not None}
                    roles.update({old.process.pid: old.role for old in self.retiring})
                    for process in alive:
                        self.log.warning("grace period over, killing child", role=roles.get(process.pid),
                                         pid=process.pid)
                        process.kill()
                    for process in alive:
                        process.join(5)
                    break
            else:
                self.start_due()
                self.check_heartbeats()
                self.maybe_log_summary()
            self.ops.health.update(self.health_snapshot(), self.stopping)
            self.wait()
        self.drain_stats()
        self.log.info("stopped", **self.summary.take())
        return 1 if self.fatal else 0

    def wait(self) -> None:
        sentinels = [s.process.sentinel for s in self.slots if s.process is not None]
        sentinels += [old.process.sentinel for old in self.retiring]
        timeout = LOOP_TICK
        now = time.monotonic()
        for slot in self.slots:
            if slot.state == "BACKOFF" and not self.stopping:
                timeout = min(timeout, max(0.0, slot.restart_at - now))
        for old in self.retiring:
            if not old.killed:
                timeout = min(timeout, max(0.0, old.deadline - now))
        if self.stopping:
            timeout = min(timeout, max(0.0, self.stop_deadline - now))
        multiprocessing.connection.wait([self._wake_r, *sentinels], timeout)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass


class _Summary:
    """Counters from the children between two summary lines."""

    def __init__(self):
        self.reset()
        self.pool = {}     # consumer role -> its latest (threads, in_flight, limit): kept across lines

    def reset(self):
        self.checks = self.ok = self.failed = self.refused = self.enqueued = self.skipped = 0
        self.monitor_failures = self.unreadable = self.starved = 0
        self.lags = []
        self.queue = None
        self.at_ceiling = set()

    def add(self, role, stats):
        if role == "producer":
            self.enqueued += stats["enqueued"]
            self.skipped += stats["skipped"]
            self.queue = (stats["queue_waiting"], stats["queue_leased"])
        elif role.startswith("consumer") and "checks" in stats:    # not its metrics-only messages
            self.checks += stats["checks"]
            self.ok += stats["ok"]
            self.failed += stats["failed"]
            self.refused += stats["refused"]
            self.monitor_failures += stats.get("monitor_failures", 0)
            self.unreadable += stats.get("unreadable", 0)
            self.starved += stats.get("starved_timeouts", 0)
            self.lags.extend(stats["lags"])
            if "threads" in stats:
                self.pool[role] = (stats["threads"], stats["in_flight"], stats["limit"])
            if stats.get("at_ceiling"):
                self.at_ceiling.add(role)

    def take(self) -> dict:
        lags = sorted(self.lags)

        def pct(p):
            return round(lags[min(len(lags) - 1, int(p * len(lags)))], 3) if lags else None
        out = {"checks": self.checks, "ok": self.ok, "failed": self.failed, "enqueued": self.enqueued,
               "skipped_slots": self.skipped, "refused": self.refused,
               "lag_p50_s": pct(0.5), "lag_p99_s": pct(0.99),
               "queue_waiting": self.queue[0] if self.queue else None,
               "queue_leased": self.queue[1] if self.queue else None,
               "check_threads": sum(p[0] for p in self.pool.values()),
               "checks_in_flight": sum(p[1] for p in self.pool.values()),
               # The signal to add a host or raise consumer.concurrency: consumers that held as
               # many checks as their ceiling allows while tasks were still waiting.
               "consumers_at_ceiling": sorted(self.at_ceiling)}
        if self.monitor_failures:
            out["monitor_failures"] = self.monitor_failures
        if self.unreadable:
            out["unreadable_settings"] = self.unreadable
        if self.starved:
            out["starved_timeouts"] = self.starved      # recorded lost: the host was overloaded
        self.reset()
        return out


FD_RESERVE = 64          # descriptors a consumer needs besides its check sockets (database, pipes, logs)


def fds_needed(concurrency: int) -> int:
    """Open files one consumer may need at its ceiling: a socket per check, a tenth more for
    name lookups and redirects in flight, and the reserve."""
    return concurrency + concurrency // 10 + FD_RESERVE


def fit_open_files(cfg, log) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it), then make sure the
    concurrency ceiling fits: running out of descriptors mid-check is a monitor failure, which
    must not happen by configuration.

    A ceiling the user set that does not fit is refused (ConfigError: exit 2, one line); the
    default ceiling is lowered to fit, with a warning.
    """
    import resource

    from ..errors import ConfigError
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return
    wanted = cfg.consumer.concurrency
    if fds_needed(wanted) <= soft:
        return
    fits = max(1, (soft - FD_RESERVE) * 10 // 11)
    source = cfg.sources.get("consumer.concurrency", "default")
    if source != "default":
        raise ConfigError(f"consumer.concurrency: {wanted} (from {source}) needs about {fds_needed(wanted)} "
                          f"open files per consumer, but the limit is {soft} (ulimit -n, hard limit): "
                          f"set it to at most {fits}, or raise the limit (systemd LimitNOFILE=, "
                          f"docker --ulimit nofile=)")
    log.warning("open-file limit too low for the default concurrency ceiling: lowered", open_files_limit=soft,
                concurrency=fits, default=wanted,
                fix="raise the limit (systemd LimitNOFILE=, docker --ulimit nofile=)")
    cfg.consumer.concurrency = fits
    cfg.values["consumer.concurrency"] = fits


def usable_cpus() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def run(cfg, config_path=None, env=None, cli_flags=None) -> int:
    """`sitewatch run`: migrate, start the children, supervise until stopped."""
    try:
        import setproctitle
        setproctitle.setproctitle("sitewatch: supervisor")
    except ImportError:
        pass
    log = logs.get()
    logs.configure(cfg.log.level, cfg.log.format, role="supervisor")
    sentry.init(cfg.sentry.dsn, "supervisor", cfg.database.dsn)
    fit_open_files(cfg, log)    # before anything is started: a ceiling that cannot fit is bad input
    # The metrics port is taken before anything starts: in use, it is bad input (exit 2).
    ops = Operations(cfg.metrics.listen, cfg.supervisor.heartbeat_timeout,
                     cfg.metrics.per_url_limit if cfg.metrics.per_url else None)
    # Starting the embedded server and migrating can take a while: a signal arriving
    # meanwhile is recorded and handled by the main loop, so the server is still released.
    early_signals = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda signum, frame: early_signals.append(signum))
    try:
        database = Database.open(cfg)
    except BaseException:
        ops.close()
        raise
    try:
        conn = database.connect("supervisor")
        try:
            applied = schema.migrate(conn)
        finally:
            conn.close()
        sup = Supervisor(cfg, config_path, env or {}, database)
        sup.cli_flags = cli_flags or {}   # SIGHUP reloads with the same flags
        sup.signals = early_signals       # the same list: nothing recorded in between is lost
        sup.ops = ops
        ops.start(database)
        log.info("sitewatch running", database=database.describe(), schema_migrations_applied=applied,
                 producer=1, consumers=sup.consumer_count(), concurrency=cfg.consumer.concurrency,
                 start_method=START_METHOD, pid=os.getpid(), metrics=ops.describe())
        code = sup.run()
        if sup.fatal:
            from ..errors import Failure
            raise Failure(sup.fatal)
        return code
    finally:
        ops.close()
        database.close()
        sentry.flush()

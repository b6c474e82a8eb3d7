"""How many checks a consumer runs at once (issue 10): the check threads, the CPU meter and
the adaptive limit that decides from them.

`consumer.concurrency` is a ceiling, not a fixed pool. The limit grows while claimable tasks
wait, every permitted check is running and the CPU has room; it stops growing when the CPU
is the limit (more threads would only queue for the GIL and stretch every check toward its
deadline), holds while the consumer's own loop runs late and gives checks back when it runs
very late (its process starved: see LOOP_LATE_HOLD), and shrinks when the monitor itself
runs out of resources. Threads are started as checks need them and exit
after idling.
"""

import queue
import threading
import time

# Memory per thread: a check thread blocked on a socket measured about 26 KiB of RSS with the
# default 8 MiB stack and with 512 KiB alike (bench/threads_memory.py): stacks are touched
# lazily. The smaller reservation bounds address space (thousands of threads), with room to
# spare for OpenSSL and getaddrinfo.
THREAD_STACK_BYTES = 512 * 1024
IDLE_THREAD_EXIT = 30.0  # seconds a check thread waits for work before it exits

LIMIT_START = 100        # checks allowed at first (the old fixed default); grows from here
LIMIT_FLOOR = 10         # the limit never shrinks below this (or the ceiling, if lower)
CONTROL_INTERVAL = 1.0   # seconds between decisions about the limit
# More threads help while checks wait on the network; once the CPU is the limit they only
# queue for the GIL, cost CPU in switching, and stretch every check toward its deadline.
CPU_OWN_BOUND = 0.85       # a consumer using this much of one core is CPU-bound
CPU_CORE_BUSY = 0.90       # ... and so is one using a real part of a core this busy
CPU_OWN_SIGNIFICANT = 0.30
# The consumer's own loop (claims, writes, heartbeats) must come round every
# CONTROL_INTERVAL. When it is late, the process is starved for the CPU or the GIL (another
# program took the core, and thousands of check threads fight for what is left): more checks
# would only make it later, and a loop silent for supervisor.heartbeat_timeout is killed with
# every check it holds (issue 18: a busy loop on one core grew both consumers to their
# ceiling, then one went silent and was killed). So a late loop holds the limit, and a very
# late one lowers it until the loop keeps time again.
LOOP_LATE_HOLD = 0.5       # seconds late: do not grow
LOOP_LATE_SHRINK = 2.0     # seconds late: hold a fifth fewer checks (never below the floor)
CEILING_LOG_EVERY = 60.0  # seconds between "at its ceiling" warnings


class CheckThreads:
    """Daemon threads running one function on items from a queue, started as needed.

    Not ThreadPoolExecutor: its Future and lock per item showed in profiles at a few
    thousand checks a second, and its threads are joined at exit, so one hanging check
    would hold up a stop. A SimpleQueue hand-off is a single C call. The consumer calls
    ensure(n) after each claim so there is a thread for every check it holds; a thread
    idle for IDLE_THREAD_EXIT seconds exits.
    """

    def __init__(self, work, idle_exit: float = IDLE_THREAD_EXIT):
        self._queue = queue.SimpleQueue()
        self._work = work
        self._idle_exit = idle_exit
        self._lock = threading.Lock()
        self._names = iter(range(1, 1 << 62))
        self.size = 0            # threads alive (approximately: changed under _lock)
        self.start_failures = 0  # threads we asked for and the OS refused

    def _loop(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=self._idle_exit)
                except queue.Empty:
                    return       # idle: let the pool shrink
                if item is None:
                    return
                self._work(*item)
        finally:
            with self._lock:
                self.size -= 1

    def ensure(self, wanted: int) -> bool:
        """Have at least `wanted` threads alive; False if the OS refused one (a monitor failure)."""
        while self.size < wanted:
            with self._lock:
                self.size += 1
            try:
                threading.Thread(target=self._loop, name=f"check-{next(self._names)}", daemon=True).start()
            except RuntimeError:   # "can't start new thread": out of memory or the thread limit
                with self._lock:
                    self.size -= 1
                self.start_failures += 1
                return False
        return True

    def submit(self, *item) -> None:
        self._queue.put(item)

    def take_unstarted(self) -> list:
        """Remove and return the items no thread has picked up yet."""
        items = []
        try:
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            return items

    def stop(self) -> None:
        for _ in range(self.size):
            self._queue.put(None)


class CpuMeter:
    """How busy the CPU was since the last reading: (this process's share of one core, the
    share of the CPU it runs on that was busy, by anyone), each 0.0-1.0.

    The core: the pinned CPU's line of /proc/stat when pinned, the whole machine's
    otherwise. Without /proc/stat the core counts as busy as this process.
    """

    def __init__(self, cpu: int | None):
        self._label = f"cpu{cpu}".encode() if cpu is not None else b"cpu"
        self._last = (time.monotonic(), time.process_time(), *self._core())

    def _core(self) -> tuple[float, float]:
        try:
            with open("/proc/stat", "rb") as f:
                for line in f:
                    fields = line.split()
                    if fields and fields[0] == self._label:
                        values = [int(v) for v in fields[1:9]]
                        idle = values[3] + values[4]          # idle + iowait
                        return float(sum(values) - idle), float(sum(values))
        except (OSError, ValueError):
            pass
        return 0.0, 0.0

    def read(self) -> tuple[float, float]:
        now = (time.monotonic(), time.process_time(), *self._core())
        wall, own, busy, total = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        own_share = min(1.0, max(0.0, own / wall)) if wall > 0 else 0.0
        core_share = min(1.0, max(0.0, busy / total)) if total > 0 else own_share
        return own_share, core_share


class ConcurrencyLimit:
    """How many checks a consumer may hold at once: grows with waiting work, within the ceiling.

    A pure decision rule (no clock, no I/O): the consumer feeds it what it saw each
    CONTROL_INTERVAL, which keeps it testable.
    """

    def __init__(self, ceiling: int, start: int = LIMIT_START):
        self.ceiling = ceiling
        self.floor = min(ceiling, LIMIT_FLOOR)
        self.value = max(self.floor, min(ceiling, start))

    def update(self, *, work_waiting: bool, in_flight: int, own_cpu: float, core_busy: float,
               loop_late: float = 0.0) -> int:
        """One decision from the last interval: grow by half while work waits, every permitted
        check runs, the CPU has room and the consumer's loop keeps time. A CPU-bound consumer
        holds its limit: more threads would only queue for the GIL. It does not shrink either:
        fewer checks in flight means smaller claims and result batches, more statements per
        check, and measured half the throughput at saturation. (Another program keeping a
        shared core busy is no reason to hold back checks that only wait on the network;
        one that makes the consumer's own loop late is: `loop_late`.) A loop LOOP_LATE_SHRINK
        late lowers the limit by a fifth of the checks in flight."""
        if loop_late >= LOOP_LATE_SHRINK and in_flight > self.floor:
            self.value = max(self.floor, min(self.value, int(in_flight * 0.8)))
            return self.value
        cpu_bound = own_cpu >= CPU_OWN_BOUND or (core_busy >= CPU_CORE_BUSY and own_cpu >= CPU_OWN_SIGNIFICANT)
        if work_waiting and in_flight >= self.value * 0.9 and not cpu_bound and loop_late < LOOP_LATE_HOLD:
            self.value = min(self.ceiling, max(self.value + 10, int(self.value * 1.5)))
        return self.value

    def back_off(self, in_flight: int) -> int:
        """The monitor ran out of something (descriptors, threads): hold fewer checks."""
        self.value = max(self.floor, min(self.value, int(in_flight * 0.8)))
        return self.value

    @property
    def at_ceiling(self) -> bool:
        return self.value >= self.ceiling

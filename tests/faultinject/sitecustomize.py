"""Fault injection for `sitewatch run` tests: a bug the real code cannot be made to show.

A test puts this directory on the run's PYTHONPATH; Python imports sitecustomize at start-up,
in the supervisor and in every spawned child. Without the variables below it does nothing.

SWTEST_STUCK_CHECKS=TEXT: a check of a URL containing TEXT never returns, as a check thread
caught in a bug would (the probe's own deadline cannot end it): the consumer's stuck-thread
rule (consumer.stuck_margin) is then the only way out.
"""

import os

_STUCK = os.environ.get("SWTEST_STUCK_CHECKS")

if _STUCK:
    import threading

    from sitewatch.check import probe

    _real_check = probe.check
    _never = threading.Event()

    def _check(target, *args, **kwargs):
        if _STUCK in target.url:
            _never.wait()
        return _real_check(target, *args, **kwargs)

    probe.check = _check

# SWTEST_CHECK_THREADS=N: the OS refuses to start a check thread while N are alive ("can't start
# new thread", as at the process's thread limit or out of memory).
_THREADS = os.environ.get("SWTEST_CHECK_THREADS")

if _THREADS:
    import threading

    _most = int(_THREADS)
    _real_start = threading.Thread.start

    def _start(self, *args, **kwargs):
        if self.name.startswith("check-") and \
                sum(t.name.startswith("check-") for t in threading.enumerate()) >= _most:
            raise RuntimeError("can't start new thread")
        return _real_start(self, *args, **kwargs)

    threading.Thread.start = _start

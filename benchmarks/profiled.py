"""Runs a module under cProfile, from SIGUSR1 to exit: `python -m benchmarks.profiled OUT.pstats
MODULE [ARGS...]`. Used for the passthrough baseline, so that the sidecar's profile has a
floor to be compared with, function by function.

The profiler's clock is the thread's CPU time, not the wall clock: on two cores shared with the
load generator and the upstreams, a process is often preempted right after a socket write
wakes its peer, and a wall-clock profile charges that wait to the write.
"""

from __future__ import annotations

import atexit
import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    out, module = sys.argv[1], sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    prof = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

    def dump() -> None:
        prof.disable()
        prof.dump_stats(out)

    atexit.register(dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    runpy.run_module(module, run_name="__main__")


if __name__ == "__main__":
    main()

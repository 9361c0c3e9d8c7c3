"""``python -m gymray.run`` (and the ``gymray`` script): the command line as a process
(see :mod:`gymray.cli`)."""

import gc
import logging
import os
import sys

from gymray import errors  # (light: no Ray, no pyarrow)

_BLAS = "OPENBLAS_NUM_THREADS"


def main() -> int:
    """:func:`gymray.cli.main`, then a quick exit. The process's entry only: it ends
    the process's Ray and keeps its objects from the last garbage collection.

    Measured on the 2.9 GB SFT corpus, 2 cores, from the last line printed to the exit:
    - Ray's exit hook sleeps 0.5 s for its workers' log lines, which gymray never
      forwards (``log_to_driver=False``): disconnecting here skips it;
    - from a cluster it joined, ``ray.shutdown()`` ends with a 250 ms wait in Ray's
      client (0.25-0.27 s): the process exits once only that is left
      (:func:`gymray.cluster.disconnect`);
    - the interpreter's last collection walks every object the run left (Ray, pyarrow,
      numpy, pydantic): 0.20-0.23 s, 0.03 s once they are frozen. Exiting frees them
      all the same, and gymray closes its files itself.

    What the imports made is frozen before the command, too: full collections during
    the run (Ray's driver runs one whenever its object store asks) skip it. DPO 1M, 2
    cores: 0.142 s in two of them, 0.016 s in one, frozen."""
    # A SIGTERM or Ctrl-C before the verb's own handler (the imports take ~0.5 s) is
    # noted, and the verb stops as it starts (exit 3); it was -15, or a traceback.
    errors.note_signals(errors.STOPS)
    cli, cluster = _imported()
    gc.freeze()
    # --json: stdout stays the JSON's until Ray's driver threads, which print the raylet's
    # warnings to sys.stdout, are stopped (see cli.json_stdout)
    with cli.json_stdout(cli.wants_json(sys.argv[1:])):
        try:
            code = cli.main()
        except BaseException:
            cluster.disconnect(wait=True)  # all of it: the interpreter's exit follows
            raise
        errors.note_late_signals()  # the exit code is decided (see errors.finished)
        quick = cluster.disconnect()
        gc.freeze()
    if quick:  # what is left of ray.shutdown() is a wait (see cluster.disconnect)
        try:
            logging.shutdown()
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:  # None: closed when the process started (>&-)
                    stream.flush()
        except (OSError, ValueError):  # a reader gone: nothing more can reach it
            pass
        finally:
            os._exit(code)
    return code


def _imported():
    """gymray's CLI and its cluster module, imported here, not at the top, so that a
    signal during the imports is noted (see :func:`main`) and so that OpenBLAS starts
    no threads: loaded with numpy (pyarrow imports it), it starts one per core, each
    spinning as it starts, 0.1 of the driver's 0.8 CPU-s on 2 cores, more with more
    cores, for a pool this process never uses. OpenBLAS reads the setting once, as it
    loads; the environment is put back after, so that what this process starts (a
    local Ray, the NeMo RL job) gets the caller's."""
    set_here = _BLAS not in os.environ
    if set_here:
        os.environ[_BLAS] = "1"
    try:
        from gymray import cli, cluster  # (here, not at the top: see the docstring)
    finally:
        if set_here:
            del os.environ[_BLAS]
    return cli, cluster


if __name__ == "__main__":
    sys.exit(main())

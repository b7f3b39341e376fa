"""Run ``ferd`` on each malformed input of a case list, in one fresh process (one torch import), and report
per case: exit status, stderr, and this process's peak RSS after it (tests/integration/test_hostile_input.py).

    python tests/support/hostile_driver.py CASES.json RESULTS.json
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import resource
import sys


def main(cases_path: str, results_path: str) -> None:
    from ferd.cli import main as ferd

    logging.disable(logging.CRITICAL)  # the log records are not the error line under test
    results = []
    for case in json.loads(open(cases_path).read()):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = ferd(case["argv"])
            except SystemExit as exc:  # argparse
                rc = exc.code
            except BaseException as exc:  # noqa: BLE001 - a traceback is what the test looks for
                import traceback

                rc, _ = -1, traceback.print_exc(file=err)
                err.write(f"UNCAUGHT {type(exc).__name__}")
        results.append({"name": case["name"], "rc": rc, "stderr": err.getvalue(),
                        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Run the end-to-end tests: every test_* function of tests/e2e/test_*.py.
Usage: run.py [-k SUBSTRING]...  Prints one line per test and a summary
line 'N passed, N failed[, N skipped]'."""
import importlib.util
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ebbtest  # noqa: E402


def main():
    filters = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "-k"]
    here = os.path.dirname(os.path.abspath(__file__))
    passed = failed = skipped = 0
    for fn in sorted(os.listdir(here)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fn[:-3], os.path.join(here, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in [n for n in dir(mod) if n.startswith("test_")]:
            full = "%s::%s" % (fn[:-3], name)
            if filters and not any(f in full for f in filters):
                continue
            t0 = time.time()
            try:
                getattr(mod, name)()
            except ebbtest.TestSkip as e:
                skipped += 1
                print("SKIP %s (%s)" % (full, e), flush=True)
                continue
            except Exception:
                failed += 1
                print("FAIL %s (%.1fs)" % (full, time.time() - t0), flush=True)
                traceback.print_exc()
                continue
            passed += 1
            print("ok   %s (%.1fs)" % (full, time.time() - t0), flush=True)
    summary = "%d passed, %d failed" % (passed, failed)
    if skipped:
        summary += ", %d skipped" % skipped
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

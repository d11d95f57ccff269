#!/usr/bin/env python3
"""The man pages cover every option: each --flag that `ebbd --help` and
`ebbctl --help` print, each ebbctl command, and each config key of
`ebbd --check-config`'s output, must appear in the matching page.
Usage: check-coverage.py EBBD EBBCTL MANDIR"""
import re
import subprocess
import sys


def main():
    ebbd, ebbctl, mandir = sys.argv[1:4]
    page = {n: open("%s/%s.scd" % (mandir, n)).read()
            for n in ("ebbd.8", "ebbctl.1", "ebbd.conf.5")}
    missing = []
    h = subprocess.run([ebbd, "--help"], capture_output=True, text=True).stdout
    for flag in sorted(set(re.findall(r"--[a-z][a-z-]+", h))):
        if "*%s*" % flag not in page["ebbd.8"]:
            missing.append("ebbd.8: %s" % flag)
        if flag not in ("--config", "--check-config", "--help") and \
                "(*%s*" % flag not in page["ebbd.conf.5"]:
            missing.append("ebbd.conf.5: %s" % flag)
    # Every section and key of the settings ebbd prints (the defaults are
    # enough: every key is printed).
    c = subprocess.run([ebbd, "--check-config", "--config", "/dev/null"],
                       capture_output=True, text=True).stdout
    for line in c.splitlines():
        m = re.match(r"(?:# )?([a-z-]+)(?: =|:)", line)
        if line.startswith("[") and "# %s" % line not in page["ebbd.conf.5"]:
            missing.append("ebbd.conf.5: section %s" % line)
        elif m and not line.startswith("# ebbd") and \
                "*%s* =" % m.group(1) not in page["ebbd.conf.5"]:
            missing.append("ebbd.conf.5: key %s" % m.group(1))
    h = subprocess.run([ebbctl, "--help"], capture_output=True, text=True).stdout
    for cmd in re.findall(r"^  ([a-z]+)\b", h, re.M):
        if "\n*%s*" % cmd not in page["ebbctl.1"]:
            missing.append("ebbctl.1: command %s" % cmd)
    for flag in sorted(set(re.findall(r"--[a-z][a-z-]+", h))):
        if "*%s*" % flag not in page["ebbctl.1"]:
            missing.append("ebbctl.1: %s" % flag)
    for m in missing:
        print("not in the man page:", m)
    print("%d missing" % len(missing))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

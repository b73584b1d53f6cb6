"""The server's memory and CPU, read from /proc: works when the server runs on this machine."""
import os

TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree(pid):
    """Return ``pid`` and all its descendants (gunicorn's master and workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def sample(pid):
    """Return (RSS in KiB, CPU seconds) summed over the process tree of ``pid``."""
    rss = cpu = 0
    for member in tree(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{member}/statm") as f:
                rss += int(f.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError):
            continue
        # utime + stime, and cutime + cstime: children that exited (PostgreSQL backends) count too
        cpu += sum(int(field) for field in fields[11:15]) / TICKS
    return rss, cpu

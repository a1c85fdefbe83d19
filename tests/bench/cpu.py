"""CPU seconds of the service processes, PostgreSQL and the broker, read from /proc (the soak's
per-minute figures, the probe's and the benchmark's cost per detection)."""

import os
import time
from pathlib import Path


class CpuMeter:
    """Per interval, the CPU each service used (percent of one core), and PostgreSQL's and the
    embedded broker's (all their processes; a process gone since the last sample is not counted)."""

    GROUPS = {"postgres": "postgres", "broker": "tansu"}  # group: what its processes' names start with

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self.last, self.at = self._sample(), time.perf_counter()

    def percentages(self) -> dict[str, float]:
        at = time.perf_counter()
        elapsed, self.at = at - self.at, at
        return {group: round(100 * seconds / elapsed, 1) for group, seconds in self.seconds().items()}

    def seconds(self) -> dict[str, float]:
        """CPU seconds per service and group since the last call (or since this meter began)."""
        now = self._sample()
        spent: dict[str, float] = {}
        for (group, pid), seconds in now.items():
            spent[group] = spent.get(group, 0.0) + seconds - self.last.get((group, pid), 0.0)
        self.last = now
        return spent

    def _sample(self) -> dict[tuple[str, int], float]:
        sample = {(name, pid): self._cpu(pid) for name, pid in self.pids.items()}
        for d in os.listdir("/proc"):
            if d.isdigit():
                comm = _read(f"/proc/{d}/comm").strip()
                for group, name in self.GROUPS.items():
                    if comm.startswith(name):
                        sample[(group, int(d))] = self._cpu(int(d))
        return sample

    def _cpu(self, pid: int) -> float:
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick if len(fields) > 12 else 0.0


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:  # the process is gone
        return ""

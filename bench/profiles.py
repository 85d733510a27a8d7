"""Summarise py-spy ``--format raw`` profiles (collapsed stacks) written by ``make bench``.

``python -m bench.profiles var/bench/<run>/profiles/*.txt`` prints, per file, the frames
where the sampled threads were (self) and the project's functions they were under
(inclusive), as shares of all samples.  py-spy leaves out idle threads, so a thread blocked
in ``recv`` waiting for an answer still counts: read "self" as where the time goes, CPU or
waiting on a socket, not as CPU alone.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

PROJECT_MARKERS = ("delivery/", "webhooks_core/", "registration/", "producer/", "outbox/")


def summarise(path: Path, top: int = 12) -> str:
    """The summary of one profile file."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        self_counts[frames[-1]] += samples
        for frame in set(frames):
            if any(marker in frame for marker in PROJECT_MARKERS):
                inclusive[frame] += samples
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in self_counts.most_common(top)]
    lines.append("  inclusive (project code):")
    lines += [f"    {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the summary of each file named in ``argv``."""
    for name in argv:
        print(summarise(Path(name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

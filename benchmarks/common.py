"""What the benchmark scripts share: the CPU's name and vendor, and the README tables they replace."""

from __future__ import annotations

import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("AMD EPYC ...", "Intel(R) Xeon(R) ..."), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """"amd", "intel" or "cpu": the same code runs at different ratios on AMD and Intel, so each keeps its table."""
    name = cpu_name().lower()
    return "amd" if "amd" in name else "intel" if "intel" in name else "cpu"


def update_readme(key: str, table: str, readme: Path = ROOT / "README.md") -> bool:
    """Replace the text between ``<!-- key:start -->`` and ``<!-- key:end -->`` in README.md with ``table``.
    Returns False (and says so) when the README has no such markers."""
    text = readme.read_text()
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    if start not in text or end not in text:
        print(f"README.md has no {start} ... {end} markers; table not inserted.")
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    print(f"README.md table {key} updated.")
    return True

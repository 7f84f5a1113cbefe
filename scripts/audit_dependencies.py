"""CI guard: known vulnerabilities in the locked dependencies.

    python -m scripts.audit_dependencies

Exports ``uv.lock`` (every dependency group) as pinned, hashed requirements and audits them with
pip-audit (run from PyPI by uvx, pinned) against PyPI's vulnerability data, which pip-audit reads
from PyPI's per-release JSON API. Exits 1 on any known vulnerability.

When that service cannot be reached (no network, or a PyPI mirror without the per-release JSON API),
pip-audit cannot look any package up: the audit then says plainly that it was not performed and
exits 0, since it has neither found nor ruled out anything.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PIP_AUDIT = "pip-audit==2.10.1"
# What pip-audit's HTTP client says when the service cannot be reached at all.
UNREACHABLE = ("ConnectionError", "Max retries exceeded", "Failed to resolve", "timed out")


def _audit(requirements: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "uvx",
            "--from",
            PIP_AUDIT,
            "pip-audit",
            "--requirement",
            str(requirements),
            "--require-hashes",
            "--disable-pip",  # the export pins and hashes everything: no resolution needed
            "--vulnerability-service",
            "pypi",
            "--progress-spinner",
            "off",
            "--format",
            "json",
            "--output",
            str(report),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        requirements, report = Path(folder) / "requirements.txt", Path(folder) / "audit.json"
        export = ["uv", "export", "--frozen", "--all-groups", "--no-emit-project", "--quiet"]
        subprocess.run([*export, "--output-file", str(requirements)], check=True)
        run = _audit(requirements, report)
        if not report.exists():  # pip-audit stopped before writing its report
            reason = (run.stderr.strip().splitlines() or ["no output"])[-1]
            if any(marker in run.stderr for marker in UNREACHABLE):
                print(f"Dependency audit NOT performed: the vulnerability service is unreachable ({reason}).")
                return 0
            print(run.stderr, file=sys.stderr)
            return run.returncode or 1
        dependencies: list[dict[str, Any]] = json.loads(report.read_text())["dependencies"]

    status, lines = summarize(dependencies)
    print("\n".join(lines))
    return status


def summarize(dependencies: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """The exit status and the report for pip-audit's JSON ``dependencies``."""
    vulnerable = [dependency for dependency in dependencies if dependency.get("vulns")]
    skipped = [dependency for dependency in dependencies if "skip_reason" in dependency]
    lines = [
        f"{dependency['name']} {dependency['version']}: {vulnerability['id']} "
        f"(fixed in {', '.join(vulnerability.get('fix_versions') or []) or 'no release yet'})"
        for dependency in vulnerable
        for vulnerability in dependency["vulns"]
    ]
    if vulnerable:
        lines.append(f"{len(vulnerable)} of {len(dependencies)} locked packages have known vulnerabilities.")
        return 1, lines
    if skipped and len(skipped) == len(dependencies):
        lines.append(
            f"Dependency audit NOT performed: none of the {len(dependencies)} locked packages could be "
            f"looked up in PyPI's vulnerability data ({skipped[0]['skip_reason']}); its per-release JSON "
            "API is not reachable from here."
        )
        return 0, lines
    lines += [f"not audited: {dependency['skip_reason']}" for dependency in skipped]
    audited = len(dependencies) - len(skipped)
    lines.append(f"No known vulnerabilities in {audited} audited packages ({len(skipped)} not audited).")
    return 0, lines


if __name__ == "__main__":
    sys.exit(main())

"""scripts/audit_dependencies.py: what pip-audit's JSON report makes of the CI step. (The audit itself
needs PyPI's vulnerability data, which .ci/run reaches where it can.)"""

from __future__ import annotations

from typing import Any

from scripts.audit_dependencies import summarize

CLEAN = {"name": "fastapi", "version": "0.165.0", "vulns": []}
VULNERABLE = {
    "name": "jinja2",
    "version": "3.1.2",
    "vulns": [
        {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]},
        {"id": "PYSEC-2099-1", "fix_versions": [], "aliases": []},
    ],
}


def skipped(name: str) -> dict[str, Any]:
    reason = f"Dependency not found on PyPI and could not be audited: {name} (1.0)"
    return {"name": name, "skip_reason": reason}


def test_a_known_vulnerability_fails_the_step() -> None:
    status, lines = summarize([CLEAN, VULNERABLE, skipped("private-package")])
    assert status == 1
    assert lines == [
        "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)",
        "jinja2 3.1.2: PYSEC-2099-1 (fixed in no release yet)",
        "1 of 3 locked packages have known vulnerabilities.",
    ]


def test_nothing_looked_up_is_reported_as_not_performed() -> None:
    status, lines = summarize([skipped("fastapi"), skipped("uvicorn")])
    assert status == 0
    assert lines[-1].startswith("Dependency audit NOT performed: none of the 2 locked packages")


def test_a_clean_audit_says_what_it_could_not_audit() -> None:
    status, lines = summarize([CLEAN, skipped("private-package")])
    assert status == 0
    assert lines == [
        "not audited: Dependency not found on PyPI and could not be audited: private-package (1.0)",
        "No known vulnerabilities in 1 audited packages (1 not audited).",
    ]

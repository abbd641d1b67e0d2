"""internet.nl's mail TLS subtests, graded offline: the levels, and the worst of a port's.

internet.nl (its checks/tasks/tls code) grades each subtest good, sufficient, phase-out or
insufficient; a subtest it would run but the audit could not is "not tested".

    >>> worst({"version": "good", "ciphers": "phase-out", "dane": "not tested"})
    'phase-out'
    >>> worst({}) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping

# Best first: the order internet.nl's evaluation ranks them in.
LEVELS = ("good", "sufficient", "phase-out", "insufficient")
NOT_TESTED = "not tested"


def worst(levels: Mapping[str, str]) -> str | None:
    """The worst graded level of a port's subtests; None when none was graded."""
    graded = [LEVELS.index(v) for v in levels.values() if v in LEVELS]
    return LEVELS[max(graded)] if graded else None

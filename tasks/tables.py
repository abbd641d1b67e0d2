"""The README's generated tables, from the data they describe (unit tests keep the README equal
to them): the settings (tasks/settings.py) and the profiles (tasks/policy.py).

    python -m tasks.tables      # prints both, each between its README markers
"""

from __future__ import annotations

from tasks.policy import DEFAULT_PROFILE, PORTS, PROFILES, Profile
from tasks.settings import SETTINGS

_FLOORS = {"TLSv1.2": "TLS ≥ 1.2", "TLSv1.3": "TLS 1.3 only"}


def settings_table() -> str:
    """The settings table: key, old name, default, what it does."""
    rows = ["| key | old name (alias) | default | what it does |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = (
            "unset"
            if s.default is None
            else f"`{str(s.default).lower() if isinstance(s.default, bool) else s.default}`"
        )
        alias = f"`{s.key}`" if s.alias else "-"
        rows.append(f"| `{s.name}` | {alias} | {default} | {s.doc} |")
    return "\n".join(rows)


_CIPHERS = {"-GCM-": "AES-GCM", "CHACHA20-POLY1305": "ChaCha20-Poly1305", "-CCM": "AES-CCM"}


def _suites(p: Profile) -> str:
    kinds = ["ECDHE + AEAD" if s.startswith("ECDHE-") else "DHE + AEAD" for s in p.tls12_suites]
    ciphers = [name for part, name in _CIPHERS.items() if any(part in s for s in p.tls12_suites)]
    notes = [", ".join(ciphers)]
    if p.server_preference:
        notes.append("server order")
    if p.mandatory_min_protocol == "TLSv1.3":
        notes.append("where TLS is optional")
    return f"{', then '.join(dict.fromkeys(kinds))} ({'; '.join(notes)})"


def profiles_table() -> str:
    """The profiles table: each profile's floor per kind of port, TLS 1.2 suites, DH file.

    >>> profiles_table().splitlines()[2]
    '| `intermediate` (default) | TLS ≥ 1.2 | TLS ≥ 1.2 | ECDHE + AEAD (AES-GCM, ChaCha20-Poly1305) | none |'
    """
    optional = ", ".join(str(n) for n, p in PORTS.items() if p.opportunistic)
    mandatory = ", ".join(str(n) for n, p in PORTS.items() if not p.opportunistic)
    rows = [
        f"| profile | {optional} (TLS optional) | {mandatory} (TLS mandatory) | TLS 1.2 suites "
        "| DH file |",
        "|---|---|---|---|---|",
    ]
    for name, p in PROFILES.items():
        default = " (default)" if name == DEFAULT_PROFILE else ""
        dh = "yes ([docs/dh.md](docs/dh.md))" if p.uses_dh_file else "none"
        rows.append(
            f"| `{name}`{default} | {_FLOORS[p.opportunistic_min_protocol]} "
            f"| {_FLOORS[p.mandatory_min_protocol]} | {_suites(p)} | {dh} |"
        )
    return "\n".join(rows)


TABLES = {"settings": settings_table, "profiles": profiles_table}

if __name__ == "__main__":
    for marker, table in TABLES.items():
        print(f"<!-- {marker}:begin -->\n{table()}\n<!-- {marker}:end -->\n")

"""master.cf texts as the MailHost fact reports them, for the unit tests of the Postfix view."""

from __future__ import annotations


def postconf(master_cf: str) -> tuple[dict, dict]:
    """What `postconf -M` and `postconf -P` report for a master.cf text (as the MailHost fact
    keys them): active entries only, continuation lines joined."""
    entries: list[str] = []
    for line in master_cf.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    services, params = {}, {}
    for entry in entries:
        fields = entry.split()
        key = f"{fields[0]}/{fields[1]}"
        services[key] = " ".join(fields)
        args = fields[8:]
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "-o":
                name, _, val = value.partition("=")
                params[f"{key}/{name}"] = val
    return services, params

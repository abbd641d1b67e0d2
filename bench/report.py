"""The rounds summed up: medians, ratios and bounds per figure (results.json), and the Markdown
table the bench prints."""

from __future__ import annotations

import os
import re

from bench.ansible_cmp import ANSIBLE_TARGET, ansible_summary
from bench.floor import FLOORS
from bench.measure import loadavg, med, ratio

# fresh converge vs the floor with the deploy's checks (floor_apply), no-op vs `ssh true`, N hosts
# vs the CPU-bound minimum of the same run.
TARGETS = {"fresh_vs_floor": 1.5, "noop_vs_ssh": 2.5, "n_hosts_vs_cpu_bound": 1.15}
# Parallel runs: "fresh10", "noop30", "fresh10nw" (pyinfra --no-wait), ...
PARALLEL_KEY = re.compile(r"^(fresh|noop)(\d+)(nw)?$")


def summarise(rounds: list[dict], suites: list[str]) -> dict:
    keys = sorted({k for rd in rounds for k in rd["samples"]})
    fig: dict[str, dict] = {}
    for k in keys:
        samples = [x for rd in rounds for x in rd["samples"].get(k, [])]
        entry = {
            "n": len(samples),
            "wall_median": med([x["wall"] for x in samples]),
            "wall_min": min(x["wall"] for x in samples),
            "wall_max": max(x["wall"] for x in samples),
            "local_cpu_median": med([x["local_cpu"] for x in samples]),
            "host_cpu_median": med([x.get("host_cpu") for x in samples]),
            "walls": [round(x["wall"], 3) for x in samples],
        }
        if any("remote_commands" in x for x in samples):
            for f in ("remote_commands", "execs", "sftp", "connects", "remote_commands_per_host"):
                entry[f + "_median"] = med([x.get(f) for x in samples])
        if any("changes" in x for x in samples):
            entry["changes_median"] = med([x["changes"] for x in samples])
        if PARALLEL_KEY.match(k):
            # The hosts and the controller share this machine's cores: the run cannot be shorter
            # than all the CPU it used spread over every core.
            totals = [
                x["host_cpu"] + x["local_cpu"] for x in samples if x.get("host_cpu") is not None
            ]
            entry["cpu_total_median"] = med(totals)
            entry["cpu_bound_median"] = med([t / (os.cpu_count() or 1) for t in totals])
        fig[k] = entry
    w = {k: v["wall_median"] for k, v in fig.items()}
    ratios = {}
    for s in suites:
        for kind in FLOORS:
            ratios[f"fresh1_vs_{kind}/{s}"] = ratio(w.get(f"fresh1/{s}"), w.get(f"{kind}/{s}"))
        for kind in ("floor_checked", "floor_apply"):
            ratios[f"{kind}_vs_floor/{s}"] = ratio(w.get(f"{kind}/{s}"), w.get(f"floor/{s}"))
        ratios[f"noop1_vs_ssh_true/{s}"] = ratio(w.get(f"noop1/{s}"), w.get(f"ssh_true/{s}"))
        ratios[f"pyinfra_version_share_of_noop1/{s}"] = ratio(
            w.get("pyinfra_version"), w.get(f"noop1/{s}")
        )
    for k in fig:
        m = PARALLEL_KEY.match(k)
        if not m:
            continue
        # against the slower suite's 1-host figure
        one = max((w.get(f"{m.group(1)}1/{s}") or 0) for s in suites) or None
        bound = fig[k].get("cpu_bound_median")
        # A tighter bound: pyinfra's start-up (imports, no host yet) runs on one core alone, and
        # the controller is one process: max(controller CPU, start-up + the rest / cores).
        start = fig.get("pyinfra_version", {}).get("local_cpu_median")
        total, ctl = fig[k].get("cpu_total_median"), fig[k].get("local_cpu_median")
        if start is not None and total is not None and ctl is not None:
            cores = os.cpu_count() or 1
            fig[k]["cpu_bound_serial_median"] = max(ctl, start + (total - start) / cores)
            ratios[f"{k}_vs_cpu_bound_serial"] = ratio(w.get(k), fig[k]["cpu_bound_serial_median"])
        ratios[f"{k}_vs_1"] = ratio(w.get(k), one)
        ratios[f"{k}_cpu_bound_vs_1"] = ratio(bound, one)
        ratios[f"{k}_vs_cpu_bound"] = ratio(w.get(k), bound)
    loads = [x["load"] for rd in rounds for v in rd["samples"].values() for x in v] or [loadavg()]
    matches: dict[str, bool] = {}
    for rd in rounds:
        for k, ok in rd["floor_matches_deploy"].items():
            matches[k] = matches.get(k, True) and ok
    return {
        "figures": fig,
        "ratios": ratios,
        "floor_matches_deploy": matches,
        **ansible_summary(w, rounds, suites),
        "load": {"min": min(loads), "median": med(loads), "max": max(loads)},
    }


def fmt(v, unit="s") -> str:
    if v is None:
        return "-"
    return f"{v:.2f} {unit}".strip() if unit else f"{v:.2f}"


def table(summary: dict, suites: list[str], dh: dict) -> str:
    """Markdown table: median wall time, remote commands, CPU on hosts and controller, ratios."""
    f, r = summary["figures"], summary["ratios"]
    head = (
        "Figure",
        "Wall (median)",
        "Remote commands",
        "Host CPU",
        "Controller CPU",
        "Ratio",
        "Target",
    )
    rows = [head]

    def cmds(k):
        e = f.get(k, {})
        if e.get("remote_commands_median") is None:
            return ""
        text = (
            f"{e['remote_commands_median']:.0f} ({e['connects_median']:.0f} conn, "
            f"{e['sftp_median']:.0f} sftp)"
        )
        if PARALLEL_KEY.match(k):
            text += f", {e['remote_commands_per_host_median']:.0f}/host"
        return text

    def row(label, k, ratio_text="", target=""):
        e = f.get(k)
        if not e:
            return
        rows.append(
            (
                label,
                fmt(e["wall_median"]),
                cmds(k),
                fmt(e.get("host_cpu_median")),
                fmt(e.get("local_cpu_median")),
                ratio_text,
                target,
            )
        )

    row("`pyinfra --version` (start-up only)", "pyinfra_version")
    for s in suites:
        row(f"`ssh host true` [{s}]", f"ssh_true/{s}")
        row(f"floor: 1 ssh, writes + reloads [{s}]", f"floor/{s}")
        row(
            f"floor: 1 ssh, writes + `postfix check`, `doveconf -x -n` + reloads [{s}]",
            f"floor_checked/{s}",
            fmt(r.get(f"floor_checked_vs_floor/{s}"), "x floor"),
        )
        row(
            f"floor: 1 ssh, writes in mailtls-apply (checks, reloads, read-back, probes) [{s}]",
            f"floor_apply/{s}",
            fmt(r.get(f"floor_apply_vs_floor/{s}"), "x floor"),
        )
        row(
            f"fresh converge, 1 host [{s}]",
            f"fresh1/{s}",
            f"{fmt(r.get(f'fresh1_vs_floor_apply/{s}'), 'x floor_apply')}, "
            f"{fmt(r.get(f'fresh1_vs_floor_checked/{s}'), 'x floor_checked')}",
            f"<= {TARGETS['fresh_vs_floor']}x floor_apply",
        )
        row(
            f"no-op re-run, 1 host [{s}]",
            f"noop1/{s}",
            fmt(r.get(f"noop1_vs_ssh_true/{s}"), "x ssh"),
            f"<= {TARGETS['noop_vs_ssh']}x ssh",
        )
    for s in suites:  # --ansible: the same deploy as an Ansible playbook (bench/ansible/)
        a = summary.get("ansible_ratios", {})
        row(
            f"Ansible playbook: fresh converge [{s}]",
            f"ansible_fresh/{s}",
            f"pyinfra = {fmt(a.get(f'fresh1_vs_ansible_fresh/{s}'), 'x this')}",
            f"pyinfra <= {ANSIBLE_TARGET}x",
        )
        row(
            f"Ansible playbook: no-op re-run [{s}]",
            f"ansible_noop/{s}",
            f"pyinfra = {fmt(a.get(f'noop1_vs_ansible_noop/{s}'), 'x this')}",
        )
    for k in sorted(f, key=lambda k: (len(k), k)):
        m = PARALLEL_KEY.match(k)
        if not m:
            continue
        what = "fresh converge" if m.group(1) == "fresh" else "no-op re-run"
        how = ", pyinfra --no-wait" if m.group(3) else ""
        bound = f[k].get("cpu_bound_median")
        serial = f[k].get("cpu_bound_serial_median")
        row(
            f"{what}, {m.group(2)} hosts{how} (CPU-bound minimum: {fmt(bound)}; "
            f"with serial start-up: {fmt(serial)})",
            k,
            f"{fmt(r.get(f'{k}_vs_cpu_bound'), 'x CPU-bound min')} "
            f"({fmt(r.get(f'{k}_vs_cpu_bound_serial'), 'x')} the serial one), "
            f"{fmt(r.get(f'{k}_vs_1'), 'x 1 host')}",
            f"<= {TARGETS['n_hosts_vs_cpu_bound']}x CPU-bound min",
        )
    if dh.get("status"):
        rows.append(("DH rotation", dh["status"], "", "", "", "", ""))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if len(rows) == 1:  # no rounds (--runs 0)
        lines = []
    if dh.get("cases"):
        lines += [
            "",
            _md(
                [("DH case", "Host CPU (median)", "CPU range", "Wall (median)", "Runs")]
                + [
                    (
                        f"{c['source']} {c['bits']} [{c['suite']}]: "
                        + (
                            "rotation"
                            if c["source"] == "generated"
                            else "check only (fixed group, nothing rotates)"
                        ),
                        fmt(c["cpu_median"])
                        if c["cpu_median"] is not None
                        else c.get("note") or "-",
                        f"{c['cpu_min']:.1f}-{c['cpu_max']:.1f} s"
                        if c.get("cpu_min") is not None and c["n"] > 1
                        else "",
                        fmt(c.get("wall_median")),
                        str(c["n"]),
                    )
                    for c in dh["cases"]
                ]
            ),
        ]
    return "\n".join(lines)


def _md(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(str(c).ljust(widths[i]) for i, c in enumerate(row)) + " |" for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)

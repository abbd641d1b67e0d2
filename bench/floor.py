"""The floor: the deploy's writes as one shell script in one SSH session, rendered by the
deploy's own pure function; with its checks (floor_checked) or inside its safety net (floor_apply)."""

from __future__ import annotations

from bench.measure import Sample, timed, write_file
from tasks import host_conf, ops
from tasks.assets import sha256
from tasks.dovecot import conf as dovecot_conf
from tasks.host_facts import HostFacts
from tasks.postfix import apply as postfix_apply
from tasks.safety import verify as verify_conf
from tasks.scripts import script
from tasks.settings import validate
from testhosts import hosts as th

# Each floor variant, with the letter of its hosts' names (after PREFIX).
FLOORS = {"floor": "f", "floor_checked": "c", "floor_apply": "a"}


def floor_script(host: th.Host, info: HostFacts, kind: str) -> str:
    """The shell script of the deploy's writes for this host, rendered by the deploy's own pure
    function (tasks.host_conf.render: same settings, same policy, same bytes) and diffed against
    the fact as tasks/ops.py does.

    kind: "floor" (writes, reloads), "floor_checked" (writes, `postfix check`, `doveconf -x -n`,
    reloads) or "floor_apply" (writes inside the deploy's safety net: mailtls-apply begin/commit,
    which checks, reloads, reads back and probes)."""
    safety_net = kind == "floor_apply"
    settings = validate({}, host.name)  # bench hosts carry no host data: the defaults
    conf = host_conf.render(settings, info)
    if conf.policy.offers_dhe:
        raise RuntimeError("the floor does not render DH files yet (default profile has no DHE)")
    if conf.dovecot is None:
        raise RuntimeError(f"{host.name}: the floor expects Dovecot (stock test hosts have it)")
    if conf.postfix is None or conf.verify is None:
        raise RuntimeError(f"{host.name}: the deploy would refuse this host: {conf.refusals}")
    apply = f"{ops.APPLY}"
    lines = ["set -e"]
    apply_script = script("mailtls-apply")
    if info.files.get(ops.APPLY) != sha256(apply_script):
        lines.append(write_file(ops.APPLY, apply_script, "0755"))
    # What the commit verifies (read-back, negative probes): the deploy writes it in any case.
    verify = conf.verify.encode()
    if info.files.get(verify_conf.VERIFY_PATH) != sha256(verify):
        lines.append(write_file(verify_conf.VERIFY_PATH, verify, "0644"))
    todo = conf.postfix.missing_from(info.postconf, info.services, info.master_params)
    if safety_net:
        lines.append(f"{apply} begin postfix {' '.join(ops.POSTFIX_FILES)}")
    # The least postconf can do, as the deploy does it: one run per kind of change.
    lines += postfix_apply.postconf_commands(todo)
    if safety_net:
        lines.append(f"{apply} written postfix {' '.join(ops.POSTFIX_FILES)}")
    else:  # what `written` does for main.cf: date it 2 s back, or Postfix waits for it to settle
        lines.append(f'touch -m -d "@$(($(date +%s) - 2))" {ops.POSTFIX_FILES[0]}')
    text = conf.dovecot.encode()
    begin_dovecot = f"{apply} begin dovecot {dovecot_conf.CONF_PATH}" if safety_net else None
    written_dovecot = f"{apply} written dovecot {dovecot_conf.CONF_PATH}" if safety_net else None
    lines.append(write_file(dovecot_conf.CONF_PATH, text, "0644", begin_dovecot, written_dovecot))
    if safety_net:
        lines.append(f"{apply} commit postfix dovecot")
    else:
        if kind == "floor_checked":
            lines += ["postfix check", "doveconf -x -n >/dev/null"]
        lines += ["postfix reload >/dev/null 2>&1", "doveadm reload"]
    return "\n".join(lines) + "\n"


def run_floor(host: th.Host, script: str, label: str) -> Sample:
    sample, res = timed(host.ssh_argv("sh -s"), input=script, hosts=[host])
    if res.returncode != 0:
        raise RuntimeError(f"{label}: floor script failed:\n{res.stdout}\n{res.stderr}")
    sample.update(label=label, hosts=[host.name])
    return sample

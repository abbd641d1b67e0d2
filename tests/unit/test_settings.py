"""Every validation rule of tasks/settings.py: each bad value is refused with one line naming the
host and the key; each good value is accepted and normalised."""

from __future__ import annotations

from typing import cast

import pytest
from pyinfra.api.host import Host

from tasks.settings import (
    NAMESPACE,
    SETTINGS,
    Settings,
    SettingsError,
    data_defaults,
    defaults,
    inventory_settings,
    notes,
    validate,
)

HOST = "mx7.example.org"


def refused(data: dict, *names: str) -> str:
    """Validate `data` for HOST, expect a SettingsError; return its message after checking it is
    one line naming the host and every one of `names`."""
    with pytest.raises(SettingsError) as caught:
        validate(data, HOST)
    msg = str(caught.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith(f"{HOST}: "), msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def test_defaults_are_valid_and_complete():
    s = validate({}, HOST)
    assert isinstance(s, Settings)
    assert {k: getattr(s, k) for k in defaults()} == {x.key: x.check(x.default) for x in SETTINGS}


def test_other_host_data_is_ignored():
    # pyinfra's own keys and the user's unrelated data are not ours to judge
    s = validate({"ssh_user": "root", "ssh_port": 22, "backup_dir": "/x; rm -rf /"}, HOST)
    assert s.tls_profile == "intermediate"


# --- types and allowed values -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["intermediate", "modern", "legacy-dhe"])
def test_tls_profile_allowed(value):
    assert validate({"tls_profile": value}, HOST).tls_profile == value


@pytest.mark.parametrize("value", ["old", "Modern", " modern", "", None, 1, True, ["modern"]])
def test_tls_profile_refused(value):
    msg = refused({"tls_profile": value}, "tls_profile")
    assert "intermediate, modern, legacy-dhe" in msg


@pytest.mark.parametrize(
    "key", ["tls_pq_hybrid", "postfix_submission", "postfix_submissions", "dh_rotation"]
)
@pytest.mark.parametrize(
    "value,expected",
    [
        (True, True),
        (False, False),
        ("on", True),
        ("off", False),
        ("yes", True),
        ("NO", False),
        ("true", True),
        ("False", False),
    ],
)
def test_booleans_accepted(key, value, expected):
    data = {key: value}
    if key == "dh_rotation" and expected:
        data["dh_source"] = "generated"
    assert getattr(validate(data, HOST), key) is expected


@pytest.mark.parametrize(
    "key", ["tls_pq_hybrid", "postfix_submission", "postfix_submissions", "dh_rotation"]
)
@pytest.mark.parametrize("value", [1, 0, "1", "enabled", "", None, [True]])
def test_booleans_refused(key, value):
    msg = refused({key: value}, key)
    assert "true/false" in msg


@pytest.mark.parametrize("value", ["ffdhe3072", "ffdhe4096", "generated"])
def test_dh_source_allowed(value):
    assert validate({"dh_source": value}, HOST).dh_source == value


@pytest.mark.parametrize("value", ["ffdhe2048", "dsaparam", "rfc3526", "", None, 3072])
def test_dh_source_refused(value):
    refused({"dh_source": value}, "dh_source", "ffdhe3072, ffdhe4096, generated")


# --- ranges -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected", [(2048, 2048), (3072, 3072), (4096, 4096), ("2048", 2048)]
)
def test_dh_bits_allowed(value, expected):
    assert validate({"dh_source": "generated", "dh_bits": value}, HOST).dh_bits == expected


@pytest.mark.parametrize("value", [512, 1024, 2047, "1024", 0, -4096])
def test_dh_bits_below_2048_refused_as_breakable(value):
    refused({"dh_source": "generated", "dh_bits": value}, "dh_bits", "2048 bits at least")


@pytest.mark.parametrize("value", [2049, 3000, 8192, 16384])
def test_dh_bits_other_sizes_refused(value):
    refused({"dh_source": "generated", "dh_bits": value}, "dh_bits", "2048, 3072, 4096")


@pytest.mark.parametrize("value", [True, 3072.0, "3072 ", "3k", None, [3072]])
def test_dh_bits_wrong_type_refused(value):
    refused({"dh_source": "generated", "dh_bits": value}, "dh_bits")


# --- our namespace: typos refused, other deploys' keys left alone ------------------------------


@pytest.mark.parametrize(
    "key,hint",
    [
        ("mailtls_tls_profil", "did you mean mailtls_tls_profile?"),
        ("mailtls_dh_bit", "did you mean mailtls_dh_bits?"),
        ("mailtls_postfix_cert", "did you mean mailtls_postfix_cert_file?"),
        ("mailtls_audit_port", "did you mean mailtls_audit_ports?"),
        ("mailtls_debug", None),
        ("MailTLS_TLS_Profile", "did you mean mailtls_tls_profile?"),
        ("mailtls-tls-profile", "did you mean mailtls_tls_profile?"),
        ("MAILTLS_DH_BITS", "did you mean mailtls_dh_bits?"),
    ],
)
def test_unknown_keys_in_our_namespace_refused(key, hint):
    msg = refused({key: "x"}, repr(key), "unknown setting")
    if hint:
        assert hint in msg


def test_every_setting_has_a_namespaced_name_and_old_names_alias_exactly():
    for s in SETTINGS:
        assert s.name == NAMESPACE + s.key
        assert validate({s.name: s.default}, HOST) == validate({}, HOST)


# Another deploy's host data: never ours to refuse, whatever it holds.
OTHERS = {
    "postfix_relayhost": "[smtp.example.org]:587",
    "postfix_myhostname": "mx.example.org",
    "dovecot_mail_location": "maildir:~/Maildir",
    "dovecot_protocols": ["imap", "lmtp"],
    "tls_something_else": {"x": 1},
    "dh_group": None,
    "audit_log": "/var/log/audit",
    "tls_profil": "???",
    "TLS_Profile": 7,
    "tls-profile": "x",
    "DH_BITS": 1,
}


def test_other_deploys_keys_are_not_refused():
    assert validate(OTHERS, HOST) == validate({}, HOST)


def test_near_misses_of_old_names_are_only_noted():
    said = "\n".join(notes(OTHERS))
    assert (
        "'tls_profil' is not a mailtls setting, ignored (did you mean mailtls_tls_profile?)" in said
    )
    assert "postfix_relayhost" not in said and "dovecot_mail_location" not in said
    assert notes({"tls_profile": "modern", "mailtls_dh_bits": 2048}) == []


@pytest.mark.parametrize(
    "old,new,value",
    [
        ("tls_profile", "mailtls_tls_profile", "modern"),
        ("dh_rotation_schedule", "mailtls_dh_rotation_schedule", "*/30 3 * * 1"),
        ("audit_ports", "mailtls_audit_ports", "25,993"),
    ],
)
def test_old_and_new_names_mean_the_same(old, new, value):
    assert (
        validate({old: value}, HOST)
        == validate({new: value}, HOST)
        == validate({old: value, new: value}, HOST)
    )


def test_old_and_new_names_must_agree():
    msg = refused(
        {"tls_profile": "modern", "mailtls_tls_profile": "intermediate"},
        "mailtls_tls_profile='intermediate'",
        "tls_profile='modern'",
        "disagree",
    )
    assert "set one of them" in msg
    # agreeing after normalisation is agreeing
    assert validate(
        {"dh_rotation": "yes", "mailtls_dh_rotation": True, "dh_source": "generated"}, HOST
    ).dh_rotation
    assert (
        validate(
            {"dh_bits": "4096", "mailtls_dh_bits": 4096, "dh_source": "generated"}, HOST
        ).dh_bits
        == 4096
    )


def test_a_bad_value_is_named_as_given():
    refused({"mailtls_tls_profile": "old"}, "mailtls_tls_profile='old'")
    refused({"tls_profile": "old"}, "tls_profile='old'")


def test_data_defaults_are_the_namespaced_defaults():
    assert data_defaults() == {NAMESPACE + k: v for k, v in defaults().items()}
    assert validate(data_defaults(), HOST) == validate({}, HOST)


# --- audit keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("25,587", (25, 587)),
        ("993", (993,)),
        ([25, "465"], (25, 465)),
        (" 25 , 143 ,", (25, 143)),
        ("25,25", (25,)),
        (25, (25,)),
    ],
)  # --data audit_ports=25 arrives as an int
def test_audit_ports_accepted(value, expected):
    assert validate({"audit_ports": value}, HOST).audit_ports == expected


@pytest.mark.parametrize("value", ["", "25,26", "smtp", "25;587", [True], True, 26, None, "-25"])
def test_audit_ports_refused(value):
    refused({"mailtls_audit_ports": value}, "mailtls_audit_ports")


@pytest.mark.parametrize("value", ["nope", "", None, 1, "1", "enabled"])
def test_audit_exclude_self_is_a_real_boolean(value):
    # it used to be "anything but false/no/off/0 is true": `nope` meant yes
    refused({"audit_exclude_self": value}, "audit_exclude_self", "true/false")


@pytest.mark.parametrize("value,expected", [(24, 24.0), ("0.5", 0.5), ("168", 168.0)])
def test_audit_log_hours_accepted(value, expected):
    assert validate({"audit_log_hours": value}, HOST).audit_log_hours == expected


@pytest.mark.parametrize("value", [0, -1, "x", "", None, True, "nan", "inf", 24 * 367])
def test_audit_log_hours_refused(value):
    refused({"audit_log_hours": value}, "audit_log_hours")


def test_audit_json():
    assert validate({"audit_json": "out/{host}.json"}, HOST).audit_json == "out/{host}.json"
    assert validate({"audit_json": ""}, HOST).audit_json is None
    refused({"audit_json": "a\nb"}, "audit_json")
    refused({"audit_json": 5}, "audit_json")


def test_audit_html_is_one_page_per_run():
    assert validate({"mailtls_audit_html": "out/audit.html"}, HOST).audit_html == "out/audit.html"
    assert validate({"mailtls_audit_html": "out/"}, HOST).audit_html == "out/"
    assert validate({"mailtls_audit_html": ""}, HOST).audit_html is None
    refused({"mailtls_audit_html": "out/{host}.html"}, "mailtls_audit_html", "one file per run")
    refused({"mailtls_audit_html": "a\nb"}, "mailtls_audit_html")
    assert validate({"audit_html": "x"}, HOST).audit_html is None  # no old name: not ours


def test_audit_metrics_is_one_prom_file_per_run():
    ok = validate({"mailtls_audit_metrics": "/var/lib/prometheus/node-exporter/mailtls.prom"}, HOST)
    assert ok.audit_metrics == "/var/lib/prometheus/node-exporter/mailtls.prom"
    assert validate({"mailtls_audit_metrics": "textfile/"}, HOST).audit_metrics == "textfile/"
    assert validate({}, HOST).audit_metrics is None
    refused({"mailtls_audit_metrics": "m.txt"}, "mailtls_audit_metrics", ".prom")
    refused({"mailtls_audit_metrics": "{host}.prom"}, "mailtls_audit_metrics", "one file per run")


def test_unknown_key_reported_before_a_bad_value():
    # the typo is the likelier cause: name it, not the value that then falls back to a default
    refused({"tls_profile": "old", "mailtls_tls_profle": "modern"}, "mailtls_tls_profle")


# --- paths: shell and config metacharacters ------------------------------------------------------

PATH_KEYS = (
    "postfix_cert_file",
    "postfix_key_file",
    "dovecot_cert_file",
    "dovecot_key_file",
    "dh_file",
)
BAD_PATHS = [
    "etc/ssl/x.pem",  # relative
    "~/x.pem",
    "/etc/ssl/x.pem; reboot",  # shell
    "/etc/ssl/$(reboot).pem",
    "/etc/ssl/`id`.pem",
    "/etc/ssl/x.pem|cat",
    "/etc/ssl/x.pem&",
    "/etc/ssl/x y.pem",  # space splits a postconf/doveconf value
    "/etc/ssl/x.pem\n",  # a trailing newline would end the config line
    "/etc/ssl/x.pem\nssl = no",
    "/etc/ssl/x.pem\tx",
    "/etc/ssl/x.pem#c",  # comment in main.cf / dovecot.conf
    "/etc/ssl/x=.pem",
    "/etc/ssl/{x}.pem",
    "/etc/ssl/x.pem,/y",  # list separator in postconf
    "</etc/ssl/x.pem",  # Dovecot 2.3 include syntax
    "/etc/ssl/'x'.pem",
    '/etc/ssl/"x".pem',
    "/etc/ssl/x\\.pem",
    "/etc/ssl/*.pem",
    "/etc/ssl/../shadow.pem",  # traversal
    "/etc/ssl/..",
    "/etc/ssl/dir/",  # a directory
    "/etc/ssl/é.pem",
    "/" + "a" * 4095,
    5,
    ["/etc/ssl/x.pem"],
]


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize("value", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_unsafe_paths_refused(key, value):
    pair = {
        "postfix_cert_file": "postfix_key_file",
        "postfix_key_file": "postfix_cert_file",
        "dovecot_cert_file": "dovecot_key_file",
        "dovecot_key_file": "dovecot_cert_file",
    }
    data = {key: value}
    if key in pair:
        data[pair[key]] = "/etc/ssl/ok.pem"
    refused(data, key)


@pytest.mark.parametrize(
    "value",
    [
        "/etc/ssl/mailtls/cert+chain.pem",
        "/etc/letsencrypt/live/mx-1.example.org/fullchain.pem",
        "/srv/tls/MX_1.crt",
    ],
)
def test_plain_paths_accepted(value):
    s = validate({"postfix_cert_file": value, "postfix_key_file": "/etc/ssl/private/k.key"}, HOST)
    assert s.postfix_cert_file == value


@pytest.mark.parametrize("value", [None, ""])
def test_cert_paths_may_be_unset(value):
    assert (
        validate({"dovecot_cert_file": value, "dovecot_key_file": value}, HOST).dovecot_cert_file
        is None
    )


@pytest.mark.parametrize("value", [None, ""])
def test_dh_file_is_required(value):
    refused({"dh_file": value}, "dh_file", "required")


# --- cron fields --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,expected",
    [
        ("17 4 * * 0", "17 4 * * 0"),
        ("  */30  3 * *   1 ", "*/30 3 * * 1"),
        ("0 0 1 1 7", "0 0 1 1 7"),
        ("0,30 1-5/2 1-31 */3 1-5", "0,30 1-5/2 1-31 */3 1-5"),
        ("59 23 31 12 6", "59 23 31 12 6"),
    ],
)
def test_cron_schedules_accepted(value, expected):
    assert validate({"dh_rotation_schedule": value}, HOST).dh_rotation_schedule == expected


@pytest.mark.parametrize(
    "value,why",
    [
        ("17 4 * *", "five cron fields"),
        ("17 4 * * 0 root", "five cron fields"),
        ("@weekly", "five cron fields"),
        ("", "five cron fields"),
        ("60 4 * * 0", "minute"),
        ("17 24 * * 0", "hour"),
        ("17 4 0 * *", "day of month"),
        ("17 4 32 * *", "day of month"),
        ("17 4 * 13 *", "month"),
        ("17 4 * 0 *", "month"),
        ("17 4 * * 8", "day of week"),
        ("*/0 4 * * 0", "step"),
        ("5-1 4 * * 0", "backwards"),
        ("17 4 * jan sun", "month"),
        ("17 4 * * 0;reboot", "day of week"),
        ("17 4 * * $(id)", "day of week"),
        ("17 4 * * %", "day of week"),  # % is a newline to cron
        ("1,,2 4 * * 0", "minute"),
        ("- 4 * * 0", "minute"),
        ("17 4 * * 1-", "day of week"),
        (17, "five cron fields"),
        (None, "five cron fields"),
    ],
)
def test_cron_schedules_refused(value, why):
    refused({"dh_rotation_schedule": value}, "dh_rotation_schedule", why)


def test_cron_schedule_newline_cannot_add_a_job():
    # split() treats the newline as a separator: six fields, refused
    refused({"dh_rotation_schedule": "17 4 * * 0\n* * * * * reboot"}, "dh_rotation_schedule")


# --- combinations -------------------------------------------------------------------------------


def test_rotation_needs_generated_parameters():
    refused({"dh_rotation": True}, "dh_rotation", "dh_source=generated")
    refused({"dh_rotation": "yes", "dh_source": "ffdhe4096"}, "dh_rotation", "ffdhe4096")
    assert validate({"dh_rotation": True, "dh_source": "generated"}, HOST).dh_rotation


def test_dh_bits_only_with_generated_parameters():
    refused({"dh_source": "ffdhe3072", "dh_bits": 4096}, "dh_bits", "dh_source=generated")
    refused({"dh_source": "ffdhe4096", "dh_bits": 2048}, "dh_bits", "ffdhe4096")
    # the default (3072), or the group's own size, is not a contradiction
    assert validate({"dh_source": "ffdhe4096"}, HOST).dh_bits == 3072
    assert validate({"dh_source": "ffdhe4096", "dh_bits": 4096}, HOST).dh_source == "ffdhe4096"


@pytest.mark.parametrize("daemon", ["postfix", "dovecot"])
def test_cert_and_key_go_together(daemon):
    refused({f"{daemon}_cert_file": "/etc/ssl/c.pem"}, f"{daemon}_cert_file", f"{daemon}_key_file")
    refused({f"{daemon}_key_file": "/etc/ssl/k.pem"}, f"{daemon}_cert_file", f"{daemon}_key_file")


@pytest.mark.parametrize(
    "key", ["postfix_cert_file", "postfix_key_file", "dovecot_cert_file", "dovecot_key_file"]
)
def test_dh_file_must_not_overwrite_a_certificate_or_key(key):
    daemon = key.split("_")[0]
    data = {f"{daemon}_cert_file": "/srv/tls/c.pem", f"{daemon}_key_file": "/srv/tls/k.pem"}
    data[key] = data["dh_file"] = "/srv/tls/shared.pem"
    refused(data, "dh_file", key, "overwrite")


@pytest.mark.parametrize(
    "value",
    [
        "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "/etc/ssl/private/dh.pem",
        "/etc/passwd",
        "/etc/postfix/main.cf",
        "/etc/ssl/mailtls/dh",
    ],
)
def test_dh_file_must_be_a_pem_file_outside_the_certificate_stores(value):
    refused({"dh_file": value}, "dh_file", ".pem")


def test_dh_file_elsewhere_accepted():
    assert validate({"dh_file": "/etc/postfix/dh.pem"}, HOST).dh_file == "/etc/postfix/dh.pem"


def test_resumption_choices():
    assert validate({}, HOST).tls_resumption == "bounded"
    assert validate({"mailtls_tls_resumption": "off"}, HOST).tls_resumption == "off"
    refused({"mailtls_tls_resumption": "on"}, "mailtls_tls_resumption", "bounded, off")


# --- every setting has at least one refused value here ------------------------------------------


def test_every_setting_is_covered():
    bad = {
        "tls_profile": "x",
        "tls_pq_hybrid": "x",
        "tls_resumption": "x",
        "postfix_cert_file": "x",
        "postfix_key_file": "x",
        "dovecot_cert_file": "x",
        "dovecot_key_file": "x",
        "postfix_submission": "x",
        "postfix_submissions": "x",
        "dh_source": "x",
        "dh_bits": "x",
        "dh_file": "x",
        "dh_rotation": "x",
        "dh_rotation_schedule": "x",
        "audit_ports": "x",
        "audit_log_hours": "x",
        "audit_json": 5,
        "audit_html": "out/{host}.html",
        "audit_metrics": "out/audit.txt",
        "audit_exclude_self": "x",
        "cert_watch": "x",
        "outbound_pq_share": "x",
    }
    assert set(bad) == {s.key for s in SETTINGS}, "a new setting needs its validation tests"
    for key, value in bad.items():
        refused({NAMESPACE + key: value}, NAMESPACE + key)


def test_host_name_is_whatever_pyinfra_calls_it():
    with pytest.raises(SettingsError, match=r"^10\.213\.0\.2: tls_profile="):
        validate({"tls_profile": "x"}, "10.213.0.2")


def test_cert_watch_has_no_old_name():
    assert validate({"mailtls_cert_watch": "off"}, HOST).cert_watch is False
    assert validate({"cert_watch": "off"}, HOST).cert_watch is True  # not ours: someone else's key
    refused({"mailtls_cert_watch": "maybe"}, "mailtls_cert_watch", "true/false")


@pytest.mark.parametrize("key", ["dh_file", "postfix_cert_file", "dovecot_key_file"])
def test_no_setting_may_name_the_watchers_copies(key):
    data = {
        "postfix_cert_file": "/etc/ssl/c.pem",
        "postfix_key_file": "/etc/ssl/k.pem",
        "dovecot_cert_file": "/etc/ssl/c.pem",
        "dovecot_key_file": "/etc/ssl/k.pem",
    }
    data[key] = "/etc/ssl/mailtls/served/postfix.pem"
    refused(data, key, "certificate watcher")


class _Host:
    """What settings_for() uses of a pyinfra Host inside our @deploy: merged data (defaults last)."""

    name = HOST

    def __init__(self, data: dict):
        self._deploy_data = data_defaults()
        merged = {**self._deploy_data, **data}
        self.data = type("Data", (), {"dict": lambda _self: dict(merged)})()

    def get_deploy_data(self) -> dict:
        return self._deploy_data


def _host(data: dict) -> Host:
    """A _Host where settings_for() wants a pyinfra Host: it reads only what _Host has."""
    return cast(Host, _Host(data))


def test_inside_the_deploy_our_data_defaults_do_not_count_as_the_users_values():
    from tasks.mail_tls import settings_for

    # an old name in the inventory beats the namespaced default pyinfra merged in
    assert settings_for(_host({"tls_profile": "modern"})).tls_profile == "modern"
    assert (
        settings_for(_host({"dh_rotation_schedule": "1 2 * * *"})).dh_rotation_schedule
        == "1 2 * * *"
    )
    assert settings_for(_host({})) == validate({}, HOST)
    # values the user gave are still checked, namespaced or not
    with pytest.raises(SettingsError, match="mailtls_tls_profile='x'"):
        settings_for(_host({"mailtls_tls_profile": "x"}))


# --- issue 12: paths are normalised before they are compared; no shared directories; ASCII cron --


@pytest.mark.parametrize(
    "value",
    [
        "/etc/ssl//certs/ssl-cert-snakeoil.pem",
        "/etc/ssl/./private/x.pem",
        "//etc/ssl/certs/x.pem",
        "/etc/ssl/certs/./././x.pem",
        "/etc/ssl/private//./dh.pem",
    ],
)
def test_dh_file_cannot_reach_the_certificate_stores_by_spelling(value):
    refused({"dh_file": value}, "dh_file", "outside /etc/ssl/certs/")


@pytest.mark.parametrize(
    "value",
    [
        "/tmp/dh.pem",
        "/var/mail/dh.pem",
        "/var/tmp/x/dh.pem",
        "/dev/shm/dh.pem",
        "/run/lock/dh.pem",
        "//tmp/dh.pem",
        "/./tmp/dh.pem",
    ],
)
def test_dh_file_in_a_directory_others_write_to_refused(value):
    refused({"dh_file": value}, "dh_file", "other users can write")


def test_paths_are_normalised():
    s = validate(
        {
            "dh_file": "/etc/ssl//mailtls/./dh.pem",
            "postfix_cert_file": "/srv//tls/./c.pem",
            "postfix_key_file": "/srv/tls/k.pem",
        },
        HOST,
    )
    assert (s.dh_file, s.postfix_cert_file) == ("/etc/ssl/mailtls/dh.pem", "/srv/tls/c.pem")
    # the same file under two spellings is still the same file
    refused(
        {
            "dh_file": "/srv/tls//c.pem",
            "postfix_cert_file": "/srv/./tls/c.pem",
            "postfix_key_file": "/srv/tls/k.pem",
        },
        "dh_file",
        "overwrite",
    )
    refused({"dh_file": "/etc/ssl/mailtls/."}, "dh_file")


@pytest.mark.parametrize(
    "value",
    ["١٧ 4 * * 0", "１７ 4 * * 0", "17 ४ * * 0", "17 4 * * ０", "*/３ 4 * * 0", "1-５ 4 * * 0"],
)
def test_cron_schedule_ascii_digits_only(value):
    refused({"dh_rotation_schedule": value}, "dh_rotation_schedule")


class _CountingHost:
    """The little of a pyinfra Host that host_settings() reads; counts the reads."""

    reads = 0

    def __init__(self, name: str, data: dict):
        self.name, self._data = name, data
        self.data = type("Data", (), {"dict": self._read})()

    def _read(self, _data=None) -> dict:
        _CountingHost.reads += 1
        return dict(self._data)

    def get_deploy_data(self) -> dict:
        return {}


class _Inventory:
    """pyinfra's Inventory: iterable, hashed by identity, weakly referenceable."""

    def __init__(self, hosts: list):
        self.hosts = hosts

    def __iter__(self):
        return iter(self.hosts)


def test_inventory_settings_checks_each_host_once_per_inventory():
    """deploy.py runs once per host: the hosts are checked on the first run only."""
    hosts = [_CountingHost(f"mx{i}", {"mailtls_tls_profile": "modern"}) for i in range(3)]
    inventory, _CountingHost.reads = _Inventory(hosts), 0
    for _ in hosts:  # what three deploy runs in one process ask
        assert inventory_settings(inventory)["mx1"].tls_profile == "modern"
    assert _CountingHost.reads == 3
    other = _Inventory([_CountingHost("mx9", {})])  # another run's inventory is checked afresh
    assert inventory_settings(other)["mx9"] == validate({}, "mx9")


def test_inventory_settings_refuses_again_on_every_call():
    inventory = _Inventory(
        [_CountingHost("mx1", {}), _CountingHost("mx2", {"mailtls_tls_profile": "legacy"})]
    )
    for _ in range(2):
        with pytest.raises(SettingsError, match="mx2"):
            inventory_settings(inventory)

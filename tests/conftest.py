"""Shared fixtures: real Debian 12 (bookworm), 13 (trixie) and 14 (forky) test hosts over real SSH.

Every test that takes the `suite` fixture runs on each of SUITES (Debian 12, 13 and 14). With
pytest-xdist (pyproject's addopts: `-n 3`) each release's integration tests form one scope,
run by one worker (ReleaseScheduling): the three releases go side by side, each worker starts
only its release's session hosts, and no two workers share a host name (the worker's number is
in PREFIX).

- `stock`: one untouched host per release for the whole session (never deploy to it).
- `deployed`: one host per release deployed once with the default profile; tests may read,
  send mail and handshake, and must leave its config as they found it.
  Each starts when a test first asks for its release.
- `fresh_host(suite)`: a new host of its own for a test that changes or breaks things;
  stopped after the test.
- `run_pyinfra(hosts, script, *args)`: runs the real `pyinfra` CLI as a user would.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testhosts import hosts as th  # noqa: E402

# The unit tests' audit results (tests/auditresults.py) as fixtures, from here: a second
# conftest.py under tests/unit would be a second module named `conftest`, and the integration
# tests' `from conftest import ...` would find the wrong one in a run that collects both.
pytest_plugins = ["auditresults"]

SUITES = ("bookworm", "trixie", "forky")  # every release the deploy supports
# The releases whose OpenSSL (3.5, 3.6) has X25519MLKEM768: the hybrid group is promised there.
PQ_SUITES = ("trixie", "forky")
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
_counter = itertools.count(1)


def host_prefix(environ: Mapping[str, str]) -> str:
    """What every test host's name starts with in this process.

    Several test runs may share one machine (and its host registry): MAILTLS_TEST_PREFIX keeps
    their fixed host names apart. An xdist worker adds "w" and its number, so that workers of
    one run never share a host, and a name still starts with a letter (testhosts' NAME_RE).

    >>> host_prefix({"PYTEST_XDIST_WORKER": "gw2"})
    'w2'
    >>> host_prefix({"MAILTLS_TEST_PREFIX": "ci"})
    'ci'
    """
    worker = environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    return environ.get("MAILTLS_TEST_PREFIX", "") + (f"w{worker}" if worker else "")


PREFIX = host_prefix(os.environ)


def fresh_name(prefix: str, suite: str, pid: int, n: int) -> str:
    """The name of a run's n-th fresh host: its process keeps parallel runs apart.

    >>> name = fresh_name(host_prefix({"PYTEST_XDIST_WORKER": "gw2"}), "forky", 4242, 123)
    >>> name, bool(th.NAME_RE.match(name))
    ('w2ff42x123', True)
    """
    return f"{prefix}f{suite[0]}{pid % 100}x{n}"


def pytest_configure(config):
    """Every release's image exists before any test starts (built once, in the process that
    starts the xdist workers): a first run that built forky's on demand did it beside the other
    releases' first tests, and its debootstrap and zstd took the CPU their hosts and scans
    needed. Not for a run of the unit tests alone, nor without root."""
    if hasattr(config, "workerinput") or os.geteuid() != 0 or not _runs_integration(config):
        return
    from testhosts import image

    image.build_all(SUITES, log=lambda m: print(m, file=sys.stderr))


def _runs_integration(config) -> bool:
    """Whether this run may collect an integration test: not `-m unit`, and its paths (none:
    pyproject's testpaths) not all outside tests/integration."""
    if (config.option.markexpr or "").strip() == "unit":
        return False
    paths = [Path(a.partition("::")[0]).resolve() for a in config.args]
    integration = ROOT / "tests" / "integration"
    return not config.args or any(
        p == integration or integration in p.parents or p in integration.parents for p in paths
    )


def pytest_collection_modifyitems(config, items):
    """Every test is `unit` or `integration` by where it lives: `pytest -m unit` runs
    tests/unit/ and the doctests in tasks/, `pytest -m integration` tests/integration/.

    Then the longest work first (what ReleaseScheduling hands out, in this order): each
    release's tests, the modules of a few tests that take minutes (LONG_MODULES), the other
    integration tests, the unit tests; each part in its collected order."""
    for item in items:
        integration = "integration" in item.path.parts
        item.add_marker(pytest.mark.integration if integration else pytest.mark.unit)
    items.sort(key=lambda item: run_rank(item.nodeid))


# Modules outside the release scopes whose tests take minutes (bench/README.md: the CI's
# slowest tests): handed out right after the releases, so that none of them starts last.
LONG_MODULES = ("test_mailflow.py", "test_outbound.py", "test_upgrade.py")


def run_rank(nodeid: str) -> int:
    """0 a release's integration test, 1 one of LONG_MODULES, 2 another integration test,
    3 a unit test or doctest.

    >>> run_rank("tests/integration/test_mailflow.py::test_no_mail_is_lost")
    1
    >>> [run_rank("tests/integration/test_deploy.py::t[forky]"), run_rank("tasks/policy.py::x")]
    [0, 3]
    """
    path = Path(nodeid.partition("::")[0])
    if "integration" not in path.parts:
        return 3
    if release_scope(nodeid):
        return 0
    return 1 if path.name in LONG_MODULES else 2


# Modules whose module fixture starts hosts of every release: one scope, whatever the test's id.
CROSS_RELEASE = frozenset({"test_outbound.py"})


def release_scope(nodeid: str) -> str | None:
    """The release an integration test runs on, by its id; None for any other test.

    >>> release_scope("tests/integration/test_audit.py::test_x[forky-journal]")
    'forky'
    >>> release_scope("tests/integration/test_outbound.py::test_y[trixie]") is None
    True
    """
    path, _, name = nodeid.partition("::")
    if "integration" not in Path(path).parts or Path(path).name in CROSS_RELEASE:
        return None
    params = name.partition("[")[2].removesuffix("]").split("-")
    return next((s for s in SUITES if s in params), None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's loadscope, with a release's tests as one scope (and every other test by its
    module), handed out in collection order. xdist's own `loadgroup` marks are lost under
    pytest 9 (it renames Item._nodeid, which pytest 9 no longer reads), hence a scheduler of our
    own."""
    from xdist.scheduler import LoadScopeScheduling

    class ReleaseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return release_scope(nodeid) or super()._split_scope(nodeid)

    # Scopes in collection order (pytest_collection_modifyitems: the longest first), not
    # xdist's by number of tests, which hands a module of one six-minute test out last.
    config.option.loadscopereorder = False
    return ReleaseScheduling(config, log)


def _up(specs: list[str]) -> list[th.Host]:
    if os.geteuid() != 0:
        pytest.fail("integration tests need root (systemd-nspawn, network namespaces)")
    return th.up(specs, log=lambda m: print(m, file=sys.stderr))


def printed(out: str, host: th.Host, text: str) -> bool:
    """Whether pyinfra printed the line `[HOST] TEXT...` for `host`: it pads the prefix to the
    run's longest host name (w2fb12x9 beside w2ft12x10 gets two spaces).

    >>> class H:
    ...     name = "w2fb12x9"
    >>> printed("    [w2fb12x9]  Success", H(), "Success"), printed("[w2fb12x9] Error", H(), "Success")
    (True, False)
    """
    prefix = rf"\[{re.escape(host.name)}\] +"
    return re.search(prefix + re.escape(text), out) is not None


def run_pyinfra(
    hosts,
    script: str = "deploy.py",
    *args: str,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`pyinfra -y inventory.py SCRIPT ARGS` against local test hosts (named `hosts`, via
    MAILTLS_TESTHOSTS); output captured as text."""
    names = ",".join(h.name for h in (hosts if isinstance(hosts, (list, tuple)) else [hosts]))
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("MAILTLS_HOSTS", "MAILTLS_HOSTS_FILE")
    }
    full_env.update(MAILTLS_TESTHOSTS=names, **(env or {}))  # env= may name a hosts file
    yes = [] if "--dry" in args else ["-y"]  # -y skips the change report a dry run exists for
    res = subprocess.run(
        [PYINFRA, *yes, "inventory.py", script, *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"pyinfra {script} {' '.join(args)} failed ({res.returncode}):\n"
            f"{res.stdout[-4000:]}\n{res.stderr[-8000:]}"
        )
    return res


class SessionHosts(Mapping[str, th.Host]):
    """One host per release for the session, started when a test first asks for its release
    and deployed once with the default profile if `deploy`. A start or deploy that failed fails
    every test asking for it."""

    def __init__(self, stem: str, deploy: bool):
        self.stem, self.deploy = stem, deploy
        self.hosts: dict[str, th.Host] = {}
        self.failed: dict[str, BaseException] = {}

    def __getitem__(self, suite: str) -> th.Host:
        if suite not in SUITES:
            raise KeyError(suite)
        if suite in self.failed:
            raise RuntimeError(f"the session's {suite} host failed to start") from self.failed[
                suite
            ]
        if suite not in self.hosts:
            try:
                self.hosts[suite] = _up([f"{PREFIX}{self.stem}{suite[0]}:{suite}"])[0]
                if self.deploy:  # stopped at the end, whatever the deploy did
                    run_pyinfra(self.hosts[suite])
            except BaseException as exc:
                self.failed[suite] = exc
                raise
        return self.hosts[suite]

    def __iter__(self):
        return iter(SUITES)

    def __len__(self) -> int:
        return len(SUITES)

    def down(self) -> None:
        if self.hosts:
            th.down([h.name for h in self.hosts.values()])


@pytest.fixture(scope="session")
def stock():
    """{'bookworm': Host, 'trixie': Host, 'forky': Host}, never deployed to."""
    hosts = SessionHosts("stock", deploy=False)
    yield hosts
    hosts.down()


@pytest.fixture(scope="session")
def deployed():
    """{'bookworm': Host, 'trixie': Host, 'forky': Host}, deployed once with the default
    profile."""
    hosts = SessionHosts("dep", deploy=True)
    yield hosts
    hosts.down()


@pytest.fixture
def fresh_host():
    """Factory: fresh_host('trixie') -> a new stock host, stopped after the test;
    fresh_host('trixie', 'rsyslog') one shaped by testhosts/variants.py."""
    made = []

    def make(suite: str, variant: str | None = None) -> th.Host:
        shape = f"+{variant}" if variant else ""
        host = _up([f"{fresh_name(PREFIX, suite, os.getpid(), next(_counter))}:{suite}{shape}"])[0]
        made.append(host)
        return host

    yield make
    if made:
        th.down([h.name for h in made])


@pytest.fixture(scope="module", params=SUITES)
def suite(request) -> str:
    """Each release in turn; module-scoped so that a module's fixtures built for one release
    (test_livedin's shaped hosts) serve all its tests on that release."""
    return request.param

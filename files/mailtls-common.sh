# shellcheck shell=sh
# shellcheck disable=SC2034 # the contract's names are used by the scripts that source this file
# mailtls-common.sh: what mailtls-apply, mailtls-dh-rotate and mailtls-cert-watch share: the
# paths and formats they agree on with the deploy, logging, the root-only lock directory, one
# lock per script, and the daemons' own config checks.
#
# In this repository each script sources this file from beside itself. On a host it is never a
# file of its own: the deploy installs each script with this file inlined in place of its source
# line (tasks/scripts.py), so every installed script is one file, renamed into place whole. A DH
# rotation started by cron or the watcher's timer during a deploy then runs an old script or a
# new one, never a new script with an old library (or the reverse), and root never sources a
# file other than the one it runs.
#
# Only definitions here (constants and functions): sourcing it runs nothing.

# ---- contract: begin ----
# The paths and formats the deploy shares with these scripts. tasks/scripts.py parses this block
# (and only this block) for the Python side, which keeps its constant names (ops.APPLY,
# probes.VERIFY_PATH, certs.COPIES...) but takes their values from here: one owner, read by
# both, rather than two copies kept equal by tests. So it stays plain: NAME=value, a value
# unquoted (earlier names as $NAME) or in single quotes, and comments.
APPLY=/usr/local/sbin/mailtls-apply
DH_ROTATE_BIN=/usr/local/sbin/mailtls-dh-rotate
CERT_WATCH_BIN=/usr/local/sbin/mailtls-cert-watch
# What mailtls-apply commit verifies after a reload, written by the deploy (tasks/safety/verify.py).
VERIFY=/etc/mailtls/verify.conf
DH_ROTATE_CONF=/etc/mailtls/dh-rotate.conf
CERT_WATCH_CONF=/etc/mailtls/cert-watch.conf
# State and locks: only root may write there. A lock in a directory anyone can write to
# (/run/lock) can be held by any user (deploys stall), or be a symlink root then truncates.
STATE=/var/lib/mailtls
LOCKS=$STATE/lock
APPLY_LOCK=$LOCKS/apply.lock
DH_ROTATE_LOCK=$LOCKS/dh-rotate.lock
# A reload pending per daemon (PENDING/DAEMON), the copies a rollback restores
# (BACKUPS/DAEMON), what became of each run's change (OUTCOME/DAEMON).
PENDING=$STATE/pending
BACKUPS=$STATE/backup
OUTCOME=$STATE/outcome
# Where postconf edits copies of main.cf and master.cf before mailtls-apply installs them.
STAGE=$STATE/stage
# Written after each installed rotation (printf format: DH_FILE, DH_BITS, DH_SHA256): the deploy
# tells "generated here for these settings" from a placeholder or an interrupted run.
DH_ROTATE_STAMP=$STATE/dh-rotate.done
DH_STAMP_FORMAT='DH_FILE=%s\nDH_BITS=%s\nDH_SHA256=%s\n'
CERT_WATCH_STATE=$STATE/cert-watch
CERT_WATCH_LOCK=$CERT_WATCH_STATE/.lock
# The checked copies the daemons serve: Postfix's holds the key, then the chain (one file, one
# rename); Dovecot's certificate file holds certificates only, its key file is root's alone.
SERVED=/etc/ssl/mailtls/served
SERVED_POSTFIX=$SERVED/postfix.pem
SERVED_DOVECOT_CERT=$SERVED/dovecot.crt
SERVED_DOVECOT_KEY=$SERVED/dovecot.key
# The systemd units that run the daemons: Postfix's main instance runs in postfix@-.service
# (Debian 12, under a oneshot postfix.service) or in postfix.service itself (Debian 13). One
# that is failed is started by a commit; one that is inactive or disabled is left alone.
POSTFIX_UNITS='postfix.service postfix@-.service'
DOVECOT_UNITS=dovecot.service
# ---- contract: end ----

# syslog PRIORITY MESSAGE: to syslog, facility mail, tagged with the calling script's $TAG.
syslog() { logger -t "$TAG" -p "mail.$1" -- "$2" 2>/dev/null || true; }

# is_root_dir DIR: DIR is a directory, not a symlink, owned by root.
is_root_dir() { [ -d "$1" ] && [ ! -L "$1" ] && [ "$(stat -c %u "$1")" = 0 ]; }

# lock_dir: make LOCKS (root-only, 0700) if needed; prints why not and returns 1 when it cannot
# be made, or is not a directory owned by root.
lock_dir() {
    # The mode only for LOCKS itself: STATE keeps the umask's (mailtls-apply checks it).
    { mkdir -p "${LOCKS%/*}" && { mkdir -m 0700 "$LOCKS" 2>/dev/null || [ -d "$LOCKS" ]; }; } ||
        { echo "cannot create $LOCKS"; return 1; }
    is_root_dir "$LOCKS" || { echo "$LOCKS is not a directory owned by root"; return 1; }
    chmod 0700 "$LOCKS" || { echo "cannot chmod $LOCKS"; return 1; }
}

# hold_lock FILE FLOCK-OPTION...: take FILE's lock on fd 9 for the rest of this process (an open
# file description: it goes with the process, even after kill -9). 0: held; 1: another process
# holds it (flock's answer to -n or -w); 2: FILE cannot be opened. >> never truncates.
hold_lock() {
    exec 9>>"$1" || return 2
    shift
    flock "$@" 9
}

# installed DAEMON: is DAEMON's config tool on this host?
installed() {
    case "$1" in
        postfix) command -v postfix >/dev/null 2>&1 ;;
        dovecot) command -v doveconf >/dev/null 2>&1 ;;
    esac
}

# config_check DAEMON: the daemon's own check of its config files; prints its output and
# returns 1 when it fails. Dovecot's -x also opens the certificate, key and DH files the config
# names: plain -n does not, and a missing one then only shows when a reload quietly keeps the
# old config.
config_check() {
    case "$1" in
        postfix) postfix check 2>&1 ;;
        dovecot) { doveconf -x -n >/dev/null; } 2>&1 ;;
    esac
}

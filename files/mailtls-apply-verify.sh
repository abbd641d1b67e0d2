# shellcheck shell=sh
# mailtls-apply-verify.sh: mailtls-apply's checks after a reload, what the daemon really serves.
# Sourced by mailtls-apply (inlined there at install, like mailtls-common.sh: tasks/scripts.py);
# it uses mailtls-apply's since_log, running and listening. Nothing here changes a file or a
# daemon: each function answers from its arguments, prints why a check failed and returns 1.
#
# The deploy's $VERIFY (tasks/safety/verify.py) lines: `postconf NAME=VALUE` (postconf -n must show it),
# `postconf-P SVC/TYPE/NAME=VALUE` (postconf -P), `postconf-X NAME` (must be gone), `doveconf
# NAME=VALUE` (every protocol), `probe DAEMON PORT STARTTLS|- accept|refuse ARGS... -- WHAT` (a
# handshake from this host), `cert DAEMON FILE` (every accepted handshake of DAEMON presents
# FILE's first certificate), `outbound SVC/TYPE MAX OFFER` (Postfix's TLS client with that
# transport's groups sends a first ClientHello of at most MAX bytes, 0 = any, offering OFFER,
# to Postfix's own port 25).

DOVECOT_DIR=/etc/dovecot  # where a setting Dovecot serves instead of ours is looked for

# Addresses a local client can reach for a listening TCP port, one per line (none when nothing
# listens), from SOCKETS (one `ss` for every probe of a verify: the daemon's own master's
# sockets): every listening address, a wildcard as loopback. IPv4's and IPv6's wildcard are one
# service's listener (inet_interfaces = all, listen = *, ::): it is probed once, on 127.0.0.1.
local_addresses() {  # PORT SOCKETS
    raw=$(while read -r _ _ _ a _; do  # State Recv-Q Send-Q Local-Address:Port Peer...
        case "$a" in *:"$1") echo "$a" ;; esac
    done <<EOF
$2
EOF
)
    case "
$raw" in *"
0.0.0.0:$1"* | *"
*:$1"*) raw=$(printf '%s\n' "$raw" | grep -vxF "[::]:$1") ;; esac
    printf '%s\n' "$raw" | while read -r a; do
        case "$a" in
            '') ;;
            \*:* | 0.0.0.0:*) echo "127.0.0.1:$1" ;;
            \[::\]:*) echo "[::1]:$1" ;;
            *) echo "$a" ;;
        esac
    done | awk '!seen[$0]++'
}

local_address() {  # PORT SOCKETS: the first of them
    local_addresses "$1" "$2" | head -n 1
}

# A probe's verdict is whether the handshake completes: s_client only reports the certificate,
# never refuses it. Loading the system trust store for each probe (~140 certificates, half the
# CPU a probe costs on Debian 12) would be wasted.
tls_client() {  # S_CLIENT-ARGS...: openssl s_client, bounded in time, no trust store, no input
    timeout 15 openssl s_client -no-CAfile -no-CApath -no-CAstore "$@" </dev/null
}

s_client() {  # ADDRESS STARTTLS-PROTOCOL|"" [S_CLIENT-ARGS...]: s_client's -brief output
    s_addr=$1 s_starttls=$2
    shift 2
    tls_client -connect "$s_addr" ${s_starttls:+-starttls "$s_starttls"} -brief "$@" 2>&1
}

# Does OUTPUT have a line that starts with TEXT? A `case`, not `echo | grep`: two processes
# fewer per handshake, of the ~30 a commit makes.
has_line() {  # OUTPUT TEXT
    case "
$1" in *"
$2"*) return 0 ;; esac
    return 1
}

handshake() {  # handshake ADDRESS [starttls-protocol]
    has_line "$(s_client "$1" "${2:-}")" 'CONNECTION ESTABLISHED'
}

# The positive probe: one handshake on the daemon's first TLS port that listens (tried 3 times).
probe() {  # DAEMON LOGMARK SOCKETS
    case "$1" in
        postfix) addr=$(local_address 25 "$3"); proto=smtp ;;
        dovecot) addr=$(local_address 993 "$3"); proto=
                 [ -n "$addr" ] || { addr=$(local_address 143 "$3"); proto=imap; } ;;
    esac
    [ -n "$addr" ] || return 0  # no TLS port to probe
    for _ in 1 2 3; do
        handshake "$addr" "$proto" && return 0
        sleep 1
    done
    # The most telling line: what could not be loaded, else the last TLS-related one.
    hints=$(since_log "$1" "$2" | grep -Eiw 'tls|ssl|certificate|key|config|configuration')
    hint=$(echo "$hints" | grep -Ei 'cannot|can.t|mismatch|disabling' | tail -n 1)
    [ -n "$hint" ] || hint=$(echo "$hints" | tail -n 1)
    echo "TLS handshake on $addr failed after reload${hint:+ ($hint)}"
    return 1
}

# Parameter names the deploy manages, one per line (a warning naming one fails the commit).
managed_names() {
    sed -n -e 's/^postconf \([^=]*\)=.*/\1/p' -e 's/^postconf-X \(.*\)/\1/p' \
        -e 's/^postconf-P [^=]*\/\([^/=]*\)=.*/\1/p' "$VERIFY" | sort -u
}

# Postfix warnings that mean the change did not take as written: postconf's about the new files
# and those logged since the reload that name a parameter the deploy manages (unknown, unused,
# ignored), master's duplicate entry on a mail port, any fatal or panic. Warnings about the
# admin's own settings are theirs: they do not fail our change.
# "support for parameter X will be removed" (smtpd_tls_dh1024_param_file on 3.9+ under
# legacy-dhe): still in effect, and the deploy says so; not a failure.
still_used='will be removed'
postfix_warnings() {  # LOGMARK
    names=$(managed_names)
    { postconf -n 2>&1 >/dev/null; postconf -M 2>&1 >/dev/null; postconf -P 2>&1 >/dev/null; } |
        grep -Ei 'warning|fatal|error' | grep -wF "$names" | grep -v "$still_used" | sort -u
    logged=$(since_log postfix "$1")
    echo "$logged" | grep -E ' (fatal|panic):|duplicate master\.cf entry for service "[^"]*" \((25|465|587)\)'
    echo "$logged" | grep -F 'warning:' | grep -wF "$names" | grep -v "$still_used"
}

# doveconf's output as `PATH = VALUE` lines, PATH as `doveconf PATH` takes it: a setting in a
# filter ("ssl_server {", "  prefer_ciphers = client", "}") as ssl_server/prefer_ciphers, in
# "protocol imap {" as protocol/imap/NAME. Heredoc values (2.4.5: key = <<EOD ... EOD) skipped.
dove_paths() {  # < DOVECONF-OUTPUT
    awk '{ sub(/^[ \t]+/, ""); sub(/[ \t]+$/, "") }
    eod != "" { if ($0 == eod) eod = ""; next }
    /\{$/ && !/=/ { sub(/ *\{$/, ""); gsub(/[ \t]+/, "/"); path[++d] = $0; next }
    $0 == "}" { if (d) d--; next }
    (i = index($0, "=")) {
        k = substr($0, 1, i - 1); v = substr($0, i + 1); sub(/ +$/, "", k); sub(/^ +/, "", v)
        if (v ~ /^<<[A-Za-z0-9_]+$/) { eod = substr(v, 3); next }
        p = ""; for (j = 1; j <= d; j++) p = p path[j] "/"
        print p k " = " v }'
}

dove_value() {  # NAME PATHS: the value PATHS (dove_paths lines) give NAME; status 1: none
    printf '%s\n' "$2" | awk -v k="$1 = " 'index($0, k) == 1 { print substr($0, length(k) + 1); f = 1; exit } END { exit !f }'
}

dove_query() {  # PROTOCOL|"" NAME...: doveconf's values, as dove_paths lines
    q=$1
    shift
    doveconf ${q:+-f "protocol=$q"} "$@" 2>/dev/null </dev/null | dove_paths
}

dove_name() { echo "$1" | tr / _; }  # NAME as files set it: ssl_server/x is ssl_server_x

# The value Dovecot serves for NAME, from GOT (dove_query of every name) or asked alone: 2.4.5
# drops a filter path asked after a plain name; 2.4.1 prints none for one no file sets, whose
# flat name then shows the value in effect, the default. Status 1: Dovecot reports none.
dove_served() {  # PROTOCOL NAME GOT
    dove_value "$2" "$3" || dove_value "$2" "$(dove_query "$1" "$2")" ||
        { case "$2" in */*) dove_value "$(dove_name "$2")" "$(dove_query "$1" "$(dove_name "$2")")" ;; *) false ;; esac; }
}

# Where NAME's VALUE under PROTOCOL comes from: the `doveconf -n` settings (NCONF, dove_paths
# lines) giving it, globally or in a block that applies (a protocol's only to it), then the lines
# of DIR's files but ours setting it to VALUE (file:line; in a filter by its short name).
dove_origin() {  # PROTOCOL NAME VALUE NCONF DIR
    flat=$(dove_name "$2")
    set_by=$(printf '%s\n' "$4" | awk -v a="/$2 = $3" -v b="/$flat = $3" -v p="protocol/$1/" '
        { l = "/" $0; k = substr($0, 1, index($0, " = ") - 1) }
        (substr(l, length(l) - length(a) + 1) == a || substr(l, length(l) - length(b) + 1) == b) &&
        (k !~ /^protocol\// || index(k, p) == 1) { o = o (o ? ", " : "doveconf -n sets ") $0 }
        END { print o }')
    lines=$(grep -rnE "^[[:space:]]*($flat|${2##*/})[[:space:]]*=" "$5" 2>/dev/null | grep -v '/99-mailtls\.conf:' |
        awk -v v="$3" '{ t = $0; sub(/^[^=]*=[ \t]*/, "", t); sub(/[ \t]+(#.*)?$/, "", t); gsub(/^"|"$/, "", t) }
        t == v { match($0, /^[^:]*:[0-9]+:/); r = substr($0, RLENGTH + 1); sub(/^[ \t]+/, "", r)
                 o = o (o ? "; " : "") substr($0, 1, RLENGTH) " " r }
        END { print o }')
    if [ -n "$set_by$lines" ]; then
        echo "$set_by${set_by:+${lines:+; }}$lines -- remove it there"
    else
        echo "no file in $5 sets it to $3 (the default, or a file outside $5): is 99-mailtls.conf read?"
    fi
}

# The settings the daemon reads back are those the policy sets.
readback() {  # DAEMON LOGMARK
    [ -r "$VERIFY" ] || return 0
    case "$1" in
    postfix)
        w=$(postfix_warnings "$2" | tail -n 3)
        [ -z "$w" ] || { echo "Postfix warned: $(echo "$w" | tr '\n' ' ')"; return 1; }
        n=$(postconf -n 2>/dev/null) P=$(postconf -P 2>/dev/null)
        while IFS=' ' read -r kind rest; do
            name=${rest%%=*} value=${rest#*=}
            case "$kind" in
                postconf) have=$n ;;
                postconf-P) have=$P ;;
                postconf-X) echo "$n" | grep -q "^$name = " &&
                                { echo "main.cf still sets $name"; return 1; }; continue ;;
                *) continue ;;
            esac
            want="$name = $value"; [ -n "$value" ] || want="$name ="
            echo "$have" | grep -qxF "$want" || {
                got=$(echo "$have" | grep -F "$name = " | head -n 1)
                echo "Postfix reads ${got:-no $name} where the policy sets $want"; return 1; }
        done < "$VERIFY" ;;
    dovecot)
        protos=$(doveconf -h protocols 2>/dev/null |
            awk '{ if ($2 == "=") { if ($3 == "yes") print $1 } else for (i = 1; i <= NF; i++) print $i }')
        # Filter paths (ssl_server/prefer_ciphers) first: asked after a plain name, Dovecot
        # 2.4.5 prints none of them (2.3 and 2.4.1 print every name asked, in any order).
        keys=$(sed -n 's/^doveconf \([^=]*\/[^=]*\)=.*/\1/p' "$VERIFY"; sed -n 's/^doveconf \([^=/]*\)=.*/\1/p' "$VERIFY")
        [ -n "$keys" ] || return 0
        for proto in "" $protos; do
            # shellcheck disable=SC2086 # keys: one setting name per word
            got=$(dove_query "$proto" $keys)
            while IFS=' ' read -r kind rest; do
                [ "$kind" = doveconf ] || continue
                name=${rest%%=*} value=${rest#*=}
                have=$(dove_served "$proto" "$name" "$got") || {
                    echo "Dovecot${proto:+ (protocol $proto)} reports no value for $(dove_name "$name")" \
                         "(doveconf ${proto:+-f protocol=$proto }$name printed nothing) where the policy sets $value"
                    return 1; }
                [ "$have" = "$value" ] && continue
                echo "Dovecot${proto:+ (protocol $proto)} serves $(dove_name "$name") = $have, not $value" \
                     "(the policy's, in 99-mailtls.conf): $(dove_origin "$proto" "$name" "$have" \
                     "$(doveconf -n 2>/dev/null </dev/null | dove_paths)" "$DOVECOT_DIR")"
                return 1
            done < "$VERIFY"
        done ;;
    esac
}

# What to remove, read from the suite a forbidden TLS 1.2 handshake got (an OpenSSL name): RSA
# key exchange (no key-exchange prefix), DHE key exchange, a non-AEAD suite, or both; nothing
# for an ECDHE AEAD suite.
forbidden_class() {
    c=
    case "$1" in
        ECDHE-*) ;;
        DHE-*|EDH-*|ADH-*) c="DHE key exchange" ;;
        AES*|CAMELLIA*|ARIA*|DES-*|IDEA*|RC4*|SEED*|NULL*) c="RSA key exchange" ;;
    esac
    case "$1" in
        *GCM*|*CHACHA20*|*CCM*) ;;
        *) c="${c:+$c and }a non-AEAD suite" ;;
    esac
    echo "$c"
}

# A handshake that must be refused was accepted: say what it got and, for TLS 1.2, which class
# of suite that is (one probe offers all the forbidden ones: the admin must know which to remove).
accepted() {  # PORT WHAT S_CLIENT-OUTPUT
    proto=$(echo "$3" | sed -n 's/^Protocol version: //p')
    suite=$(echo "$3" | sed -n 's/^Ciphersuite: //p')
    c=
    [ "$proto" != TLSv1.2 ] || c=$(forbidden_class "$suite")
    if [ -n "$c" ]; then
        echo "port $1 accepted TLS 1.2 with $c: $proto $suite (probe: $2)"
    else
        echo "port $1 accepted $2: $proto $suite"
    fi
}

# Every probe line of DAEMON, for each port that listens, all at the same time; and, where the
# config names a certificate (CERT-FILE, its fingerprint WANT), which one each port serves.
# Prints what a port accepted that it must refuse, or refused that it must accept. They start
# with the positive probe, not after it: a connection the port did not take (a listener Postfix
# re-creates in its reload) is no refusal and is tried again, as is a handshake that must
# succeed (the positive probe's three tries, 1 s apart).
negative_probes() {  # DAEMON SOCKETS CERT-FILE WANT
    [ -r "$VERIFY" ] || return 0
    out=$(mktemp -d) || return 1
    i=0 cert_ports=
    while IFS=' ' read -r kind d port starttls expect rest; do
        [ "$kind" = probe ] && [ "$d" = "$1" ] || continue
        args=${rest%% -- *} what=${rest#* -- }
        [ "$starttls" != - ] || starttls=
        # Every address the port listens on: a service of its own may listen on one of them.
        addrs=$(local_addresses "$port" "$2")
        for addr in $addrs; do
            i=$((i + 1)) where=$port
            [ "$addr" = "$addrs" ] || where="$port ($addr)"  # more than one: say which
            if [ -n "$4" ] && [ "$expect" = accept ]; then
                case " $cert_ports " in *" $addr "*) ;; *)
                    cert_ports="$cert_ports $addr"
                    served_cert "$where" "$addr" "$starttls" "$3" "$4" > "$out/c$i" 2>/dev/null & ;;
                esac
            fi
            (
                try=1
                while :; do
                    # shellcheck disable=SC2086 # args: s_client's words from verify.conf
                    r=$(s_client "$addr" "$starttls" $args)
                    ok=
                    has_line "$r" 'CONNECTION ESTABLISHED' && ok=1
                    noconn=
                    has_line "$r" 'connect:errno=' && noconn=1
                    { [ "$try" -lt 3 ] && [ -z "$ok" ] && { [ -n "$noconn" ] || [ "$expect" = accept ]; }; } ||
                        break
                    try=$((try + 1)); sleep 1
                done
                if [ -n "$ok" ]; then
                    [ "$expect" = refuse ] && accepted "$where" "$what" "$r"
                elif [ "$expect" = accept ]; then
                    echo "port $where refused $what, which the profile allows"
                elif [ -n "$noconn" ]; then
                    echo "port $where took no connection for $what (it must refuse it)"
                fi
            ) > "$out/$i" 2>/dev/null &
        done
    done < "$VERIFY"
    wait
    bad=$(cat "$out"/* 2>/dev/null)
    rm -rf "$out"
    [ -z "$bad" ] || { echo "negative probes: $(echo "$bad" | tr '\n' ';' | sed -e 's/;$//' -e 's/;/; /g')"; return 1; }
}

# SHA-256 fingerprint of the first certificate in a PEM stream (a key before it is skipped).
fingerprint() { openssl x509 -noout -fingerprint -sha256 2>/dev/null | sed 's/^.*=//'; }

# Does PORT (at ADDRESS, STARTTLS protocol or "") serve the certificate the config names (WANT,
# CERT-FILE's fingerprint)? Prints why not. s_client prints the certificate only without
# -brief: one handshake of its own per port, tried again while the port takes no connection.
served_cert() {  # PORT ADDRESS STARTTLS CERT-FILE WANT
    for _ in 1 2 3; do
        got=$(tls_client -connect "$2" ${3:+-starttls "$3"} 2>/dev/null | fingerprint)
        [ -z "$got" ] || break
        sleep 1
    done
    [ "$got" = "$5" ] ||
        echo "port $1 serves the certificate ${got:-(none)}, not $4's ($5), which the config names: a setting outside mailtls names another"
}

# The first ClientHello in posttls-finger's own packet dump (-L ssl-handshake-packet-dump: the
# bytes its TLS client writes): "BYTES|OFFERED|SHARES", BYTES on the wire (the first write: the
# record, header included), the supported_groups and key_share groups by name (by number for
# one not named here). Postfix drops the padding's trailing zeros from the dump, never a group.
client_hello_of() {  # DUMP-FILE
    awk '
    function byte(i) {
        return index(H, substr(hex[i], 1, 1)) * 16 - 17 + index(H, substr(hex[i], 2, 1))
    }
    function u16(i) { return byte(i) * 256 + byte(i + 1) }
    function name(g) { return (g in N) ? N[g] : g }
    BEGIN {
        H = "0123456789abcdef"
        N[4588] = "X25519MLKEM768"; N[29] = "X25519"; N[30] = "X448"; N[23] = "secp256r1"
        N[24] = "secp384r1"; N[25] = "secp521r1"; N[256] = "ffdhe2048"; N[257] = "ffdhe3072"
        N[258] = "ffdhe4096"; N[259] = "ffdhe6144"; N[260] = "ffdhe8192"
    }
    / write to .*\([0-9]+ bytes/ {
        if (seen) exit
        seen = 1; match($0, /\([0-9]+ bytes/); total = substr($0, RSTART + 1, RLENGTH - 7); next
    }
    seen && $2 ~ /^[0-9a-f][0-9a-f][0-9a-f][0-9a-f]$/ {
        # 16 bytes in 48 columns after the offset ("00|fc" marks the middle), then their text
        line = substr($0, index($0, " " $2 " ") + 6, 48); gsub(/\|/, " ", line)
        k = split(line, b, " ")
        for (i = 1; i <= k; i++) if (b[i] ~ /^[0-9a-f][0-9a-f]$/) hex[n++] = b[i]
        next
    }
    seen { exit }
    END {
        if (!n) exit
        p = 5 + 4 + 2 + 32; p += 1 + byte(p); p += 2 + u16(p); p += 1 + byte(p)
        last = p + 2 + u16(p); p += 2
        while (p + 4 <= last && p + 4 <= n) {
            t = u16(p); l = u16(p + 2); q = p + 4
            if (t == 10) for (j = q + 2; j < q + 2 + u16(q) && j < n; j += 2) offered = offered " " name(u16(j))
            if (t == 51) for (j = q + 2; j < q + 2 + u16(q) && j < n; j += 4 + u16(j + 2)) shares = shares " " name(u16(j))
            p = q + l
        }
        print total "|" offered "|" shares
    }' "$1"
}

# What Postfix's TLS client sends with GROUPS (a tls_eecdh_auto_curves value; "" = main.cf's):
# posttls-finger, the same TLS client code as smtp(8), to this Postfix's own TLS port at ADDRESS
# (STARTTLS, or TLS at once for 465), dumping what it writes. Only what our client wrote is
# read: no listener of ours that a local user could take first. Prints client_hello_of's line,
# nothing when no ClientHello was written.
client_hello() {  # GROUPS ADDRESS WRAPPER(yes|"")
    h=${2%:*} p=${2##*:}
    h=${h#[} h=${h%]}
    d=$(mktemp -d) || return 1
    timeout 15 posttls-finger -c -l may -L ssl-handshake-packet-dump ${3:+-w} \
        ${1:+-o "tls_eecdh_auto_curves=$1"} "[$h]:$p" > "$d/dump" 2>&1
    client_hello_of "$d/dump"
    rm -rf "$d"
}

# Every `outbound` line of $VERIFY, one handshake per distinct group setting, to the first of
# Postfix's own TLS ports that listens (from SOCKETS): the client's first ClientHello fits MAX
# bytes and offers OFFER. Prints what is wrong. A Postfix with no TLS port (a null client) is
# not checked here: the read-back still checks the groups it is given.
outbound_probes() {  # SOCKETS
    [ -r "$VERIFY" ] || return 0
    grep -q '^outbound ' "$VERIFY" || return 0
    command -v posttls-finger >/dev/null || {
        echo "outbound: posttls-finger (Debian's postfix package) is missing: the client's ClientHello cannot be checked"
        return 1; }
    addr=$(local_address 25 "$1") wrapper=
    [ -n "$addr" ] || { addr=$(local_address 465 "$1"); wrapper=yes; }
    [ -n "$addr" ] || { addr=$(local_address 587 "$1"); wrapper=; }
    [ -n "$addr" ] || { syslog notice "outbound ClientHello not checked: no TLS port of Postfix listens"; return 0; }
    P=$(postconf -P 2>/dev/null)
    checked=
    while IFS=' ' read -r kind svc max offer; do
        [ "$kind" = outbound ] || continue
        groups=$(echo "$P" | awk -v k="$svc/tls_eecdh_auto_curves" '$1 == k && $2 == "=" { sub(/^[^=]*= /, ""); print; exit }')
        case "$checked" in *"|$groups $max $offer|"*) continue ;; esac
        checked="$checked|$groups $max $offer|"
        hello=$(client_hello "$groups" "$addr" "$wrapper")
        if [ -z "$hello" ]; then
            echo "outbound: no ClientHello from Postfix's TLS client with $svc's groups (${groups:-as main.cf sets them}) to $addr"
            return 1
        fi
        bytes=${hello%%|*} rest=${hello#*|}
        offered=${rest%%|*} shares=${rest#*|}
        if [ "$max" -gt 0 ] && [ "$bytes" -gt "$max" ]; then
            echo "outbound: $svc sends a ClientHello of $bytes bytes (more than $max: over one TCP segment), key share$shares"
            return 1
        fi
        if [ "$offer" != - ]; then
            case " $offered " in *" $offer "*) ;; *)
                echo "outbound: $svc does not offer $offer (offers$offered)"; return 1 ;;
            esac
        fi
    done < "$VERIFY"
}

# After a reload: the daemon still runs, listens where it did (BEFORE, from its master MPID),
# serves what the policy says, with the certificate the config names (verify.conf `cert DAEMON
# FILE`, where the deploy sets one). The positive probe, the read-back and the probes of
# verify.conf run at the same time; the first that failed, in that order, says why.
verify() {  # DAEMON LOGMARK MPID BEFORE
    cert_file='' want_cert=''
    [ -r "$VERIFY" ] && cert_file=$(sed -n "s/^cert $1 //p" "$VERIFY" | head -n 1)
    # A file that holds no certificate makes the daemon fail its handshakes, which the probes
    # report with the daemon's own words: nothing to compare with then.
    [ -z "$cert_file" ] || want_cert=$(fingerprint < "$cert_file" 2>/dev/null)
    running "$1" || { echo "$1 is not running after the reload"; return 1; }
    sockets=$(ss -Hltnp 2>/dev/null)  # after the reload: for this and every probe
    now=$(listening "$3" "$sockets")
    # Only this daemon's master's listeners are probed: another process's (a second Postfix
    # instance on another address) is not what this commit changed.
    [ -z "$3" ] || sockets=$(printf '%s\n' "$sockets" | grep -F ",pid=$3,")
    gone=$(printf '%s\n' "$4" | grep -vxF -e "$now" | grep . | tr '\n' ' ')
    [ -z "$gone" ] || { echo "$1 no longer listens on $gone after the reload"; return 1; }
    v=$(mktemp -d) || { echo "cannot create a temporary directory"; return 1; }
    probe "$1" "$2" "$sockets" > "$v/1" &
    pids=$!
    readback "$1" "$2" > "$v/2" &
    pids="$pids $!"
    negative_probes "$1" "$sockets" "$cert_file" "$want_cert" > "$v/3" &
    pids="$pids $!"
    if [ "$1" = postfix ]; then
        outbound_probes "$sockets" > "$v/4" &
        pids="$pids $!"
    fi
    rc=0 n=0
    for pid in $pids; do  # in the order they started: their outputs are 1, 2, 3, 4
        n=$((n + 1))
        wait "$pid" && continue
        [ "$rc" = 0 ] && { cat "$v/$n"; rc=1; }
    done
    rm -rf "$v"
    return "$rc"
}

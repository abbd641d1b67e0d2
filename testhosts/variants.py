"""Lived-in host variants: shell scripts that shape a booted stock host like a real server.

A variant is applied over SSH after boot (`python -m testhosts up NAME:SUITE+VARIANT[+VARIANT]`,
or `python -m testhosts shape NAME VARIANT...`), so there is still one image per release: only
what a variant switches on must be installed in it (testhosts/image.py PACKAGES). Each script
runs under `sh -eu` with $SUITE (bookworm | trixie | forky) and $DOVECOT (2.3 | 2.4) set; after the last
one Postfix and Dovecot are restarted and must come up with a clean `postfix check`.

The stock hosts log to the journal only, as Debian 12/13 do (rsyslog is installed but masked).

    rsyslog       rsyslog running, /var/log/mail.log written (Debian <= 11 installed it by default)
    legacy465     an upgraded Debian <= 10 server: 465 is the pre-3.5 `smtps` entry, 587 `submission`,
                  both with SASL (Dovecot's auth socket) and restriction options
    localconf     /etc/dovecot/local.conf overrides the cipher list: the deploy must refuse, naming it
    protocolssl   a cipher list inside 20-pop3.conf's `protocol pop3 {}`: must refuse, naming it
    hardened2014  a 2014 hardening guide's leftovers in main.cf and Dovecot's 10-ssl.conf
    postscreen    postscreen on 25 (smtpd via `pass`, dnsblog, tlsproxy); submission left at `may`
    miab          Mail-in-a-Box's shape: smtps + submission with an absent milter and a cleanup
                  service of their own, permissive port-25 cipher list, 10-ssl.conf edits
    dms           docker-mailserver's shape: SASL options per service in master.cf, `smtps`,
                  an amavis re-injection smtpd on 127.0.0.1:10025 without TLS
    iredmail      iRedMail's shape: 465 named `465`, SASL socket private/dovecot-auth, a re-injection
                  smtpd with `smtpd_tls_security_level=none`, SSL settings in dovecot.conf itself
    dualcert      RSA and ECDSA certificates side by side: smtpd_tls_chain_files, Dovecot's
                  alternative certificate (docker-mailserver's SSL_ALT_*)
    managesieve   ManageSieve on 4190 (STARTTLS), Dovecot's Pigeonhole packages from the image
    mailcow       mailcow's shape: postscreen, `smtps` with a TLS option of its own, extra
                  smtpd ports 588/590, Dovecot SNI `local_name` blocks via a symlinked, `!include_try`d
                  file, `protocol imap {}` settings, `%k` in the login log format

`SASL` lists the variants whose 465/587 accept AUTH PLAIN as testhosts.image.TEST_USER;
`REFUSES` the ones the deploy must refuse, with what its error must name.
"""

from __future__ import annotations

from testhosts.image import VARIANT_DEBS

# Dovecot as Postfix's SASL server (what every shape below with AUTH uses): Dovecot ships it, no
# extra package. Appended to 10-master.conf, as admins uncomment it there; sections merge.
_DOVECOT_SASL = r"""
cat >> /etc/dovecot/conf.d/10-master.conf <<'EOF'

service auth {
  unix_listener /var/spool/postfix/private/auth {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
"""

_POSTFIX_SASL_MAIN = r"""
postconf -e smtpd_sasl_type=dovecot smtpd_sasl_path=private/auth
"""

# Comment out master.cf's stock `smtp inet ... smtpd` line (postscreen takes port 25).
_POSTSCREEN = r"""
sed -i -E 's/^(smtp[[:space:]]+inet[[:space:]].*[[:space:]]smtpd)[[:space:]]*$/#\1/' /etc/postfix/master.cf
cat >> /etc/postfix/master.cf <<'EOF'
smtp      inet  n       -       y       -       1       postscreen
smtpd     pass  -       -       y       -       -       smtpd
dnsblog   unix  -       -       y       -       0       dnsblog
tlsproxy  unix  -       -       y       -       0       tlsproxy
EOF
"""

# A DH file as the old guides made them (`openssl dhparam`; -dsaparam keeps the shaping fast).
_DH_FILE = r"""
openssl dhparam -dsaparam -out {path} {bits} 2>/dev/null
"""

VARIANTS: dict[str, str] = {
    # Debian's rsyslog package (default up to Debian 11): unmasked and started.
    "rsyslog": r"""
rm -f /etc/systemd/system/rsyslog.service
systemctl daemon-reload
systemctl enable --now rsyslog.service >/dev/null 2>&1
for i in $(seq 50); do [ -e /var/log/mail.log ] && break; logger -p mail.info "mailtls-testhosts: rsyslog up"; sleep 0.1; done
test -e /var/log/mail.log
""",
    # What Debian <= 10's master.cf offered commented out and admins enabled ($mua_* restrictions
    # written out, as Debian's wiki and most guides did); Postfix 3.5 renamed smtps to submissions,
    # release upgrades keep the old entry. Same entries: docker-mailserver target/postfix/master.cf.
    "legacy465": _DOVECOT_SASL
    + _POSTFIX_SASL_MAIN
    + r"""
cat >> /etc/postfix/master.cf <<'EOF'
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
smtps     inet  n       -       y       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
EOF
""",
    # Debian's dovecot.conf ends with `!include_try local.conf`: read after conf.d, so it beats
    # the deploy's 99-mailtls.conf. The line the deploy's error must name is the cipher list.
    "localconf": r"""
grep -q '^!include_try local.conf' /etc/dovecot/dovecot.conf || echo '!include_try local.conf' >> /etc/dovecot/dovecot.conf
if [ "$DOVECOT" = 2.3 ]; then prefer='ssl_prefer_server_ciphers = yes'; else prefer='ssl_server_prefer_ciphers = server'; fi
cat > /etc/dovecot/local.conf <<EOF
# Local overrides (kept across upgrades).
$prefer
ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT
EOF
""",
    # A per-protocol TLS setting inside Debian's own `protocol pop3 {}` block (kept for an old
    # POP3 client): a protocol filter beats every global setting, whatever the file order, so
    # 110/995 keep RSA key exchange. The deploy must refuse, naming 20-pop3.conf and the line.
    "protocolssl": r"""
sed -i '/^protocol pop3 {/a\  ssl_cipher_list = ALL:!aNULL:!eNULL' /etc/dovecot/conf.d/20-pop3.conf
grep -q '^  ssl_cipher_list = ALL:!aNULL:!eNULL$' /etc/dovecot/conf.d/20-pop3.conf
""",
    # The seed's 2014 blog post, applied years ago and never removed: main.cf and 10-ssl.conf.
    "hardened2014": _DH_FILE.format(path="/etc/postfix/dh2048.pem", bits=2048)
    + _DH_FILE.format(path="/etc/postfix/dh512.pem", bits=512)
    + r"""
postconf -e 'smtpd_tls_eecdh_grade = ultra' \
  'smtpd_tls_dh1024_param_file = /etc/postfix/dh2048.pem' \
  'smtpd_tls_dh512_param_file = /etc/postfix/dh512.pem' \
  'smtpd_tls_exclude_ciphers = aNULL, eNULL, EXPORT, DES, RC4, MD5, PSK, aECDH, EDH-DSS-DES-CBC3-SHA, EDH-RSA-DES-CDC3-SHA, KRB5-DE5, CBC3-SHA' \
  'tls_preempt_cipherlist = yes' \
  'smtpd_tls_mandatory_ciphers = high' \
  'smtpd_tls_protocols = !SSLv2,!SSLv3' \
  'smtpd_tls_mandatory_protocols = !SSLv2,!SSLv3' \
  'smtpd_tls_loglevel = 1' 'smtpd_tls_received_header = yes'
cp /etc/postfix/dh2048.pem /etc/dovecot/dh.pem
# The guide's `ssl_protocols = !SSLv2 !SSLv3` is an error with OpenSSL 3 (no SSLv2): what
# survived the upgrades is `!SSLv3`, which 2.3 translates to ssl_min_protocol = TLSv1.
if [ "$DOVECOT" = 2.3 ]; then
  cat >> /etc/dovecot/conf.d/10-ssl.conf <<'EOF'
ssl_prefer_server_ciphers = yes
ssl_dh = </etc/dovecot/dh.pem
ssl_protocols = !SSLv3
ssl_cipher_list = ALL:!LOW:!SSLv2:!EXP:!aNULL
EOF
else  # what the same edits became after the 2.4 upgrade (ssl_protocols is gone in 2.4)
  cat >> /etc/dovecot/conf.d/10-ssl.conf <<'EOF'
ssl_server_prefer_ciphers = server
ssl_server_dh_file = /etc/dovecot/dh.pem
ssl_min_protocol = TLSv1
ssl_cipher_list = ALL:!LOW:!SSLv2:!EXP:!aNULL
EOF
fi
""",
    # POSTSCREEN_README's setup (same lines: modoboa-installer master.cf.tpl, mailcow
    # data/conf/postfix/master.cf); TLS on 25 is then tlsproxy (pre-handoff) and smtpd via `pass`.
    # `submission` with `may` is an admin's local choice seen in forum configs, not from the five.
    "postscreen": _POSTSCREEN
    + r"""
postconf -e 'postscreen_access_list = permit_mynetworks' 'postscreen_greet_action = enforce' \
  'postscreen_dnsbl_action = enforce' 'postscreen_dnsbl_sites = zen.spamhaus.org*2'
cat >> /etc/postfix/master.cf <<'EOF'
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=may
EOF
""",
    # mail-in-a-box/mailinabox setup/mail-postfix.sh (master.cf smtps/submission/authclean, main.cf
    # TLS lines), setup/dkim.sh (milters, milter_default_action=accept), setup/mail-users.sh (SASL
    # via Dovecot), setup/mail-dovecot.sh (10-ssl.conf, 10-auth.conf). Changed: regexp: instead of
    # pcre: (postfix-pcre is not in the image), a 2048-bit DH file instead of 4096 (shaping time).
    "miab": _DOVECOT_SASL
    + _POSTFIX_SASL_MAIN
    + _DH_FILE.format(path="/etc/ssl/private/dh2048.pem", bits=2048)
    + r"""
cat >> /etc/postfix/master.cf <<'EOF'
smtps     inet  n       -       -       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o syslog_name=postfix/submission
  -o smtpd_milters=inet:127.0.0.1:8891
  -o cleanup_service_name=authclean
submission inet n       -       -       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o syslog_name=postfix/submission
  -o smtpd_milters=inet:127.0.0.1:8891
  -o smtpd_tls_security_level=encrypt
  -o cleanup_service_name=authclean
authclean unix  n       -       -       -       0       cleanup
  -o header_checks=regexp:/etc/postfix/outgoing_mail_header_filters
  -o nested_header_checks=
EOF
printf '%s\n' '/^\s*Received:[^\n]*(\n[ \t][^\n]*)*/ IGNORE' > /etc/postfix/outgoing_mail_header_filters
postconf -e 'smtpd_tls_security_level = may' 'smtpd_tls_auth_only = yes' \
  'smtpd_tls_dh1024_param_file = /etc/ssl/private/dh2048.pem' \
  'smtpd_tls_protocols = >=TLSv1' 'smtpd_tls_ciphers = medium' \
  'tls_medium_cipherlist = @SECLEVEL=0:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA:DES-CBC3-SHA' \
  'smtpd_tls_exclude_ciphers = aNULL RC4' 'tls_preempt_cipherlist = yes' 'smtpd_tls_received_header = yes' \
  'smtpd_tls_mandatory_protocols = >=TLSv1.2' 'smtpd_tls_mandatory_ciphers = high' \
  'tls_high_cipherlist = ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384' \
  'smtpd_tls_mandatory_exclude_ciphers = aNULL DES 3DES MD5 DES+MD5 RC4 CAMELLIA' \
  'smtpd_relay_restrictions = permit_sasl_authenticated,permit_mynetworks,reject_unauth_destination' \
  'smtpd_milters = inet:127.0.0.1:8891' 'non_smtpd_milters = $smtpd_milters' 'milter_default_action = accept'
if [ "$DOVECOT" = 2.3 ]; then
  cat >> /etc/dovecot/conf.d/10-ssl.conf <<'EOF'
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cipher_list = ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
ssl_prefer_server_ciphers = no
EOF
else
  cat >> /etc/dovecot/conf.d/10-ssl.conf <<'EOF'
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cipher_list = ALL:!kRSA:!SRP:!kDHd:!DSS:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!MD5:!PSK:!RC4:!ADH:!CAMELLIA:!ARIA:!CBC:!AESCCM:!LOW@STRENGTH
ssl_curve_list = X25519:prime256v1:secp384r1
ssl_server_prefer_ciphers = client
ssl_server_dh_file = /etc/ssl/private/dh2048.pem
EOF
fi
echo 'auth_mechanisms = plain login' >> /etc/dovecot/conf.d/10-auth.conf
""",
    # docker-mailserver/docker-mailserver target/postfix/master.cf: SASL type and path as -o
    # options of each service (not main.cf), `smtps` for 465, the amavis re-injection smtpd on
    # 127.0.0.1:10025 (no TLS). Its `smtp-amavis` transport is defined but, amavis being absent,
    # not used as content_filter (mail must still flow).
    "dms": _DOVECOT_SASL
    + r"""
cat >> /etc/postfix/master.cf <<'EOF'
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
smtps     inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=private/auth
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
smtp-amavis     unix    -       -       n       -       2       smtp
  -o smtp_data_done_timeout=1200
  -o smtp_send_xforward_command=yes
  -o disable_dns_lookups=yes
  -o max_use=20
  -o smtp_tls_security_level=none
127.0.0.1:10025 inet    n       -       n       -       -       smtpd
  -o content_filter=
  -o local_recipient_maps=
  -o relay_recipient_maps=
  -o smtpd_restriction_classes=
  -o smtpd_delay_reject=no
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_data_restrictions=reject_unauth_pipelining
  -o smtpd_end_of_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o smtpd_error_sleep_time=0
  -o smtpd_soft_error_limit=1001
  -o smtpd_hard_error_limit=1000
  -o smtpd_client_connection_count_limit=0
  -o smtpd_client_connection_rate_limit=0
  -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_milters
  -o smtp_tls_security_level=none
EOF
""",
    # iredmail/iRedMail samples/postfix/master.cf (465 named by its port number, SASL on 465/587,
    # the amavis re-injection smtpd on 127.0.0.1:10025 with `-o smtpd_tls_security_level=none`)
    # and samples/dovecot/dovecot23.conf (SASL socket private/dovecot-auth; the global SSL lines
    # in dovecot.conf itself, above the includes; `%k` in the login log format; `!include_try`
    # of a conf dir at the end). Changed: no content_filter (amavis is absent, mail must flow).
    "iredmail": r"""
cat >> /etc/dovecot/conf.d/10-master.conf <<'EOF'

service auth {
  unix_listener /var/spool/postfix/private/dovecot-auth {
    user = postfix
    group = postfix
    mode = 0666
  }
}
EOF
postconf -e smtpd_sasl_type=dovecot smtpd_sasl_path=private/dovecot-auth
cat >> /etc/postfix/master.cf <<'EOF'
# Submission, port 587, force TLS connection.
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject

# smtps, port 465, force SSL connection.
465 inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject

# smtp port used by Amavisd to re-inject scanned email back to Postfix
127.0.0.1:10025 inet n  -   n   -   -  smtpd
    -o syslog_name=postfix/10025
    -o content_filter=
    -o mynetworks_style=host
    -o mynetworks=127.0.0.1
    -o local_recipient_maps=
    -o relay_recipient_maps=
    -o strict_rfc821_envelopes=yes
    -o smtp_tls_security_level=none
    -o smtpd_tls_security_level=none
    -o smtpd_restriction_classes=
    -o smtpd_delay_reject=no
    -o smtpd_client_restrictions=permit_mynetworks,reject
    -o smtpd_helo_restrictions=
    -o smtpd_sender_restrictions=
    -o smtpd_recipient_restrictions=permit_mynetworks,reject
    -o smtpd_end_of_data_restrictions=
    -o smtpd_error_sleep_time=0
    -o smtpd_soft_error_limit=1001
    -o smtpd_hard_error_limit=1000
    -o smtpd_client_connection_count_limit=0
    -o smtpd_client_connection_rate_limit=0
    -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_address_mappings
EOF
openssl dhparam -dsaparam -out /etc/ssl/dh2048_param.pem 2048 2>/dev/null
mkdir -p /etc/dovecot/conf-enabled
if [ "$DOVECOT" = 2.3 ]; then
  ssl_files='verbose_ssl = no
ssl_cert = </etc/ssl/certs/ssl-cert-snakeoil.pem
ssl_key = </etc/ssl/private/ssl-cert-snakeoil.key
ssl_dh = </etc/ssl/dh2048_param.pem
ssl_prefer_server_ciphers = yes
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c %k session=<%{session}>'
else  # 2.4: no verbose_ssl
  ssl_files='ssl_server_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
ssl_server_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
ssl_server_dh_file = /etc/ssl/dh2048_param.pem
ssl_server_prefer_ciphers = server
login_log_format_elements = user=<%{user}> method=%{mechanism} rip=%{remote_ip} lip=%{local_ip} mpid=%{mail_pid} %{secured} %{ssl_security} session=<%{session}>'
fi
# iRedMail's SSL settings sit in dovecot.conf itself, above the includes (2.4 wants its
# dovecot_config_version line first: keep what precedes `!include conf.d/*.conf`).
{
  printf '# SSL: Global settings.\nssl = required\n%s\n' "$ssl_files"
  printf "# Fix 'The Logjam Attack'\nssl_cipher_list = EECDH+CHACHA20:EECDH+AESGCM:EDH+AESGCM:AES256+EECDH\n"
} > /etc/dovecot/iredmail-ssl.tmp
awk '/^!include conf.d\/\*.conf/ { while ((getline l < "/etc/dovecot/iredmail-ssl.tmp") > 0) print l } { print }' \
  /etc/dovecot/dovecot.conf > /etc/dovecot/dovecot.conf.new
printf '!include_try /etc/dovecot/conf-enabled/*.conf\n' >> /etc/dovecot/dovecot.conf.new
grep -q '^ssl_cipher_list = EECDH' /etc/dovecot/dovecot.conf.new
mv /etc/dovecot/dovecot.conf.new /etc/dovecot/dovecot.conf
rm /etc/dovecot/iredmail-ssl.tmp
""",
    # mailcow/mailcow-dockerized data/conf/postfix/master.cf (postscreen, smtps with
    # -o tls_preempt_cipherlist, submission with smtpd_enforce_tls, 588/590 smtpd without TLS
    # options) and data/conf/dovecot/dovecot.conf (ssl_cipher_list/ssl_prefer_server_ciphers/
    # ssl_dh, `%k` in login_log_format_elements, `protocol imap {}`, `!include_try sni.conf`
    # whose `local_name` blocks carry per-name certificates). The file lives under /opt and is
    # symlinked into conf.d, as configuration-management checkouts often are.
    "mailcow": _DOVECOT_SASL
    + _POSTFIX_SASL_MAIN
    + _POSTSCREEN
    + _DH_FILE.format(path="/etc/ssl/private/dhparams.pem", bits=2048)
    + r"""
cat >> /etc/postfix/master.cf <<'EOF'
smtps    inet  n       -       n       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_mynetworks,permit_sasl_authenticated,reject
  -o tls_preempt_cipherlist=yes
submission inet n       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_mynetworks,permit_sasl_authenticated,reject
  -o smtpd_enforce_tls=yes
  -o smtpd_tls_security_level=encrypt
  -o tls_preempt_cipherlist=yes
588 inet n      -       n       -       -       smtpd
  -o smtpd_client_restrictions=permit_mynetworks,permit_sasl_authenticated,reject
  -o smtpd_tls_auth_only=no
590 inet n      -       n       -       -       smtpd
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o smtpd_tls_auth_only=no
  -o smtpd_milters=
  -o non_smtpd_milters=
EOF
postconf -e 'smtpd_helo_required = yes' 'smtpd_tls_auth_only = yes'
mkdir -p /opt/mailcow/dovecot
if [ "$DOVECOT" = 2.3 ]; then
  cat > /opt/mailcow/dovecot/mailcow.conf <<'EOF'
ssl_min_protocol = TLSv1.2
ssl_prefer_server_ciphers = yes
ssl_cipher_list = ALL:!ADH:!LOW:!SSLv2:!SSLv3:!EXP:!aNULL:!eNULL:!3DES:!MD5:!PSK:!DSS:!RC4:!SEED:!IDEA:+HIGH:+MEDIUM
ssl_options = no_compression no_ticket
ssl_dh = </etc/ssl/private/dhparams.pem
login_log_format_elements = "user=<%u> method=%m rip=%r lip=%l mpid=%e %c %k"
auth_mechanisms = plain login
protocol imap {
  imap_metadata = yes
  mail_max_userip_connections = 500
}
!include_try /opt/mailcow/dovecot/sni.conf
EOF
  cat > /opt/mailcow/dovecot/sni.conf <<'EOF'
local_name mail.mailtls.test {
  ssl_cert = </etc/ssl/certs/ssl-cert-snakeoil.pem
  ssl_key = </etc/ssl/private/ssl-cert-snakeoil.key
}
EOF
else  # the same settings in 2.4 spelling (mailcow itself ships 2.3; 2.4 has no no_compression)
  cat > /opt/mailcow/dovecot/mailcow.conf <<'EOF'
ssl_min_protocol = TLSv1.2
ssl_server_prefer_ciphers = server
ssl_cipher_list = ALL:!ADH:!LOW:!SSLv2:!SSLv3:!EXP:!aNULL:!eNULL:!3DES:!MD5:!PSK:!DSS:!RC4:!SEED:!IDEA:+HIGH:+MEDIUM
ssl_options = no_ticket
ssl_server_dh_file = /etc/ssl/private/dhparams.pem
login_log_format_elements = "user=<%{user}> method=%{mechanism} rip=%{remote_ip} lip=%{local_ip} mpid=%{mail_pid} %{secured} %{ssl_security}"
auth_mechanisms = plain login
protocol imap {
  imap_metadata = yes
  mail_max_userip_connections = 500
}
!include_try /opt/mailcow/dovecot/sni.conf
EOF
  cat > /opt/mailcow/dovecot/sni.conf <<'EOF'
local_name mail.mailtls.test {
  ssl_server_cert_file = /etc/ssl/certs/ssl-cert-snakeoil.pem
  ssl_server_key_file = /etc/ssl/private/ssl-cert-snakeoil.key
}
EOF
fi
ln -s /opt/mailcow/dovecot/mailcow.conf /etc/dovecot/conf.d/50-mailcow.conf
""",
    # RSA and ECDSA certificates side by side, as docker-mailserver sets them up (its
    # SSL_ALT_*): Postfix's smtpd_tls_chain_files (key, chain, key, chain: it beats
    # smtpd_tls_cert_file), Dovecot's alternative certificate in 10-ssl.conf. Each client gets
    # the one its signature algorithms allow; the deploy (certificate settings unset) keeps both.
    "dualcert": r"""
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=$(hostname -f)" -keyout /etc/ssl/private/mail-ecdsa.key \
    -out /etc/ssl/certs/mail-ecdsa.pem 2>/dev/null
chgrp ssl-cert /etc/ssl/private/mail-ecdsa.key && chmod 0640 /etc/ssl/private/mail-ecdsa.key
postconf -e "smtpd_tls_chain_files = /etc/ssl/private/ssl-cert-snakeoil.key, \
/etc/ssl/certs/ssl-cert-snakeoil.pem, /etc/ssl/private/mail-ecdsa.key, /etc/ssl/certs/mail-ecdsa.pem"
if [ "$DOVECOT" = 2.3 ]; then
    printf 'ssl_alt_cert = <%s\nssl_alt_key = <%s\n' /etc/ssl/certs/mail-ecdsa.pem \
        /etc/ssl/private/mail-ecdsa.key >> /etc/dovecot/conf.d/10-ssl.conf
else
    printf 'ssl_server_alt_cert_file = %s\nssl_server_alt_key_file = %s\n' \
        /etc/ssl/certs/mail-ecdsa.pem /etc/ssl/private/mail-ecdsa.key >> /etc/dovecot/conf.d/10-ssl.conf
fi
""",
    # ManageSieve (Pigeonhole), as Mail-in-a-Box, iRedMail and mailcow run it: STARTTLS on
    # 4190 with Dovecot's global TLS settings. Its packages come with the image (VARIANT_DEBS).
    "managesieve": f"dpkg -i {VARIANT_DEBS}/*.deb >/dev/null\n"
    # Dovecot 2.3 lists it in `protocols = ...`, 2.4 as `protocols { sieve = yes }`.
    + r"""doveconf -n | grep -Eq '^protocols = .*sieve|^  sieve = yes$'
""",
}

# Variants whose 465 / 587 offer AUTH PLAIN to the test user.
SASL = {
    "legacy465": (465, 587),
    "miab": (465, 587),
    "dms": (465, 587),
    "mailcow": (465, 587),
    "iredmail": (465, 587),
}
# Variants the deploy must refuse: (file, line) its error must name.
REFUSES = {
    "localconf": ("/etc/dovecot/local.conf", "ssl_cipher_list = ALL:!aNULL:!eNULL:!EXPORT"),
    "protocolssl": ("/etc/dovecot/conf.d/20-pop3.conf", "ssl_cipher_list = ALL:!aNULL:!eNULL"),
}

# Restart (not reload: new listeners) and require both daemons up with a clean check.
_FINISH = r"""
systemctl restart postfix dovecot
postfix check
doveconf -n >/dev/null
systemctl is-active --quiet postfix dovecot
"""


def parse(spec: str) -> tuple[str, tuple[str, ...]]:
    """'web1:trixie+legacy465+rsyslog' -> ('web1:trixie', ('legacy465', 'rsyslog'))."""
    base, *names = spec.split("+")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    return base, tuple(names)


def script(names, suite: str) -> str:
    """The whole shaping script for `names` (in order) on a host of `suite`."""
    dovecot = "2.3" if suite == "bookworm" else "2.4"
    parts = [f"set -eu\nSUITE={suite}\nDOVECOT={dovecot}\n"]
    parts += [f"# --- {n}\n{VARIANTS[n]}" for n in names]
    return "\n".join(parts + [_FINISH])


def shape(host, names) -> None:
    """Apply variants to a booted host (testhosts.hosts.Host); raises with the script's stderr."""
    if not names:
        return
    res = host.ssh("sh -s", check=False, timeout=180, input=script(names, host.suite))
    if res.returncode != 0:
        raise RuntimeError(
            f"{host.name}: shaping {'+'.join(names)} failed ({res.returncode}):\n"
            f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        )

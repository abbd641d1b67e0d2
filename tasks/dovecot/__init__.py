"""Dovecot: conf.py renders the policy as our conf.d file per Dovecot version (templates in
files/dovecot/) and finds what would override it (pure); apply.py puts it in place."""

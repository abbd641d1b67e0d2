"""Postfix: conf.py renders the policy as main.cf/master.cf settings per Postfix version and
finds what would override them (pure); apply.py brings a host's files to that plan."""

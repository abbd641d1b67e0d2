"""DH parameters (legacy-dhe only): plan.py decides the file, its rotation and cron job (pure);
apply.py makes the host match. The rotation script and the RFC 7919 groups are in files/."""

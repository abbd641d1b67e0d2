"""Certificate renewals: plan.py decides what the watcher follows and which files each daemon
serves (pure); apply.py installs the watcher (files/mailtls-cert-watch and its units) and the
copies."""

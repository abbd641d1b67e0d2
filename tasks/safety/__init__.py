"""The safety net: verify.py renders what mailtls-apply checks after each reload
(/etc/mailtls/verify.conf: read-back values and handshakes, pure); apply.py installs
files/mailtls-apply and that file. The commit itself is tasks/ops.py's commit()."""

"""Where gunicorn listens, told apart without Django (gunicorn.conf.py's master may not import it)."""
import ipaddress

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def bind_is_loopback(bind):
    """Tell whether gunicorn's ``bind`` ("host:port", "[v6]:port", "unix:path") is loopback only."""
    if bind.startswith(("unix:", "fd://")):
        return True
    host = bind if bind.count(":") > 1 and "]" not in bind else bind.rsplit(":", 1)[0]
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "0.0.0.0", "" (all interfaces) are addresses; a host name may be anything

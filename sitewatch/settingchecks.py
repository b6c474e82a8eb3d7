"""What each setting accepts: the checks config.py's SETTINGS table runs on a value, each
returning a complaint (completing "SETTING ...") or None when the value is fine. Checks that
need a subsystem's parser import it when called, so loading the config loads no subsystem."""


def positive(value):
    return None if value > 0 else "must be greater than 0"


def at_most(limit):
    def check(value):
        return None if 0 < value <= limit else f"must be greater than 0 and at most {limit}"
    return check


def status_codes(value):
    from .errors import BadInput
    from .urlspec import parse_expected_status  # the same rule as for each URL's --expected-status
    try:
        parse_expected_status(value)
    except BadInput:
        return "must be status codes or ranges within 100-599, e.g. 200-299,301"
    return None


def listen_address(value):
    from .operations.listener import check_listen  # the same parser the listeners bind with
    return check_listen(value)


def between(low, high):
    def check(value):
        return None if low <= value <= high else f"must be from {low} to {high}"
    return check


def alerts(name):
    def check(value):
        from .alerts import settings  # loads Apprise only when channels are configured
        return getattr(settings, name)(value)
    return check


def web_auth(value):
    from .web.auth import parse_auth  # the same parser the web server uses
    try:
        parse_auth(value)
    except ValueError as e:
        return str(e)
    return None


def redact_web_auth(value):
    from .web.auth import redact_auth
    return redact_auth(value)


def web_tokens(value):
    from .web.tokens import check  # the same rules the web server reads the tokens by
    return check(value)


def redact_web_tokens(value):
    from .web.tokens import redact
    return redact(value)


def base_url(value):
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or "@" in parts.netloc or not value.isprintable():
        return "must be an http:// or https:// URL without user, query or fragment, e.g. https://status.example.com/"
    return None


def engine(value):
    problem = one_of("auto", "curl", "urllib3")(value)
    if problem is None and value == "curl":
        from .check.choice import curl_available
        if not curl_available():
            return "is curl, but pycurl is not installed here (pip install 'pycurl>=7.45.3,<8'); use auto or urllib3"
    return problem


def one_of(*choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(choices)}"
    return check


def source_address(value):
    """An IP address this host can bind (empty: the system chooses). Tried now with a UDP socket,
    so a typo or an address of another host stops `run` and `check` at once, not every check."""
    if value == "":
        return None
    import ipaddress
    import socket
    try:
        version = ipaddress.ip_address(value).version
    except ValueError:
        return "must be an IP address of this host (e.g. 192.0.2.10 or 2001:db8::10), or empty"
    try:
        with socket.socket(socket.AF_INET if version == 4 else socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((value, 0))
    except OSError as e:
        return f"is not an address this host can bind ({e.strerror or e})"
    return None


def region(value):
    from .regions.names import region_problem
    return region_problem(value)


def regions(value):
    from .errors import BadInput
    from .regions.names import parse_regions  # the same rule as each URL's --regions
    try:
        parse_regions(value)
    except BadInput as e:
        return str(e)
    return None


def down_when(value):
    from .regions.names import down_when_problem
    return down_when_problem(value)

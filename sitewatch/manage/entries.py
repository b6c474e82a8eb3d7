"""What a change to monitors is checked for beyond each entry's own validity (urlspec.make_entry),
the same for the command line and the write API: the channels it names exist, and push monitors,
whose tokens must be shown once each, are added one at a time."""

from ..check import push
from ..errors import BadInput
from ..redact import redact_url


def check_channels_known(entries, cfg) -> None:
    """--notify / notify: names must be channels of alerts.channels."""
    for entry in entries:
        for name in entry.notify or []:
            if name not in cfg.alerts.channels:
                known = ", ".join(sorted(cfg.alerts.channels)) or "none configured"
                raise BadInput(f"{redact_url(entry.url)}: notify names {name!r}, not a channel of "
                               f"alerts.channels ({known})", field="notify")


def refuse_push(entries, how: str = "`sitewatch url add`") -> None:
    """import and apply take no push monitor: each needs its token printed once."""
    for entry in entries:
        if push.is_push(entry.url):
            raise BadInput(f"{entry.url}: add push monitors with {how}, which prints each one's ping URL",
                           field="url")

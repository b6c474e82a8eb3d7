"""Sending one message to one named channel (an Apprise URL), with a hard deadline.

Apprise has per-request timeouts but no total deadline, and some of its plugins retry or
dribble: each send runs in its own daemon thread and the caller waits at most `timeout`
seconds. A send that overruns is reported as failed (and retried later); its thread is left
to finish on its own, so a hanging channel never holds up another channel or anything else.
Apprise's log lines for a failed send explain it; they are taken from the send's result and
redacted, since they can quote the channel URL, which holds secrets.
"""

import logging
import re
import threading

from ..redact import redact_text
from .settings import redact_channel

# Apprise logs to the "apprise" logger; its messages may quote a channel URL. They are read
# from each send's result (redacted below), never printed by logging itself.
logging.getLogger("apprise").propagate = False
_HOST_NAME = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# Apprise schemes of chats that render Markdown (links, mentions) in what they are sent.
MARKDOWN_CHATS = frozenset({"slack", "mmost", "mmosts", "discord", "rocket", "rockets", "zulip", "msteams",
                            "guilded", "ryver", "matrix", "matrixs", "gchat", "revolt", "workflows", "wxteams"})


class SendResult:
    def __init__(self):
        self.ok = False
        self.error = "no answer"
        self.done = threading.Event()


class Channels:
    """The configured channels: NAME -> Apprise URL (validated by the configuration)."""

    def __init__(self, urls: dict[str, str]):
        self.urls = dict(urls)

    def names(self) -> list[str]:
        return sorted(self.urls)

    def markdown(self, name) -> bool:
        """Whether the channel is a chat that renders Markdown whatever Apprise declares (Slack,
        Mattermost, Discord, ...): notices to it are written in CommonMark with the site's text
        as code. The others get plain text, which Apprise escapes for their format."""
        scheme = str(self.urls.get(name, "")).partition("://")[0].lower()
        return scheme in MARKDOWN_CHATS

    def _send(self, name, title, body, level, result: SendResult, markdown: bool = False) -> None:
        import apprise
        try:
            # async_mode off and no service_timeout: Apprise sends in this thread, whose deadline
            # the caller enforces. With a service_timeout, Apprise runs every send on one shared
            # pool of min(32, CPUs + 4) threads: a few hanging sends block every channel.
            app = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False, service_timeout=0))
            if not app.add(self.urls[name]):
                result.error = f"not a valid Apprise URL: {redact_channel(self.urls[name])}"
                return
            notify_type = {"success": apprise.NotifyType.SUCCESS, "failure": apprise.NotifyType.FAILURE,
                           "warning": apprise.NotifyType.WARNING}.get(level, apprise.NotifyType.INFO)
            # The format always declared: Apprise then escapes plain text for HTML (mail), Slack's
            # <...> links and mentions, and Markdown, instead of passing it through as markup.
            body_format = apprise.NotifyFormat.MARKDOWN if markdown else apprise.NotifyFormat.TEXT
            outcome = app.notify(title=title, body=body, notify_type=notify_type, body_format=body_format)
            result.ok = bool(outcome)
            if not result.ok:
                why = [entry.message for service in getattr(outcome, "results", []) or []
                       for attempt in service.attempts for entry in (attempt.logs or [])
                       if entry.level in ("WARNING", "ERROR", "CRITICAL")]
                result.error = "; ".join(why[-3:]) or "the channel refused the message"
        except Exception as e:  # a plugin bug must not kill the notifier
            result.error = f"{type(e).__name__}: {e}"
        finally:
            result.error = self.scrub(result.error)
            result.done.set()

    def start(self, name, title, body, level="info", markdown: bool = False) -> SendResult:
        """Begin one send in its own thread; wait on result.done with your deadline. `body` is
        plain text, or CommonMark when `markdown` (see markdown())."""
        result = SendResult()
        if name not in self.urls:
            result.error = f"unknown channel {name!r} (not in alerts.channels on this host)"
            result.done.set()
            return result
        threading.Thread(target=self._send, args=(name, title, body, level, result, markdown),
                         name=f"send-{name}", daemon=True).start()
        return result

    def send(self, name, title, body, level="info", timeout: float = 30.0) -> tuple[bool, str | None]:
        """Send and wait at most `timeout` seconds: (ok, error)."""
        result = self.start(name, title, body, level)
        if not result.done.wait(timeout):
            return False, f"no answer within {timeout:g} s"
        return result.ok, None if result.ok else result.error

    def scrub(self, text: str) -> str:
        """Remove every channel URL (and its parts) from text, then any other URL's secrets."""
        text = " ".join(str(text).split())
        for url in self.urls.values():
            text = text.replace(url, redact_channel(url))
            rest = url.partition("://")[2]
            for part in [p for chunk in rest.replace("?", "/").replace("&", "/").split("/")
                         for p in chunk.replace("@", ":").split(":")]:
                # Tokens and passwords; short parts (ports) and dotted host names stay readable.
                if len(part) >= 8 and not _HOST_NAME.fullmatch(part):
                    text = text.replace(part, "***")
        return redact_text(text)[:500]

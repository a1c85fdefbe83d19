"""The dev stack's mail server: a real SMTP server (aiosmtpd) on loopback that writes every mail it
is given to a file under `.state/mail/`, so that notifications can be read without a mail account."""

import itertools
import time
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.devstack.embedded import free_port


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.seq = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{next(self.seq):05d}.eml"
        rcpt = ", ".join(envelope.rcpt_tos)
        (self.folder / name).write_bytes(f"X-Envelope-To: {rcpt}\r\n".encode() + content)
        return "250 OK: written to " + name


class MailSink:
    """Started and stopped with the dev stack; `url` is what TICKETING_SMTP_URL is set to."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_Writer(self.folder), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

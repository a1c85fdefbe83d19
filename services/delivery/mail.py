"""Notification e-mail over SMTP (aiosmtplib), to the operator's mail server (settings.SmtpSettings).

No error text of the client, which may quote the server or the exchange, is shown or logged
beyond its class and code.
"""

import asyncio
import logging
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib

from services.settings import SmtpSettings

log = logging.getLogger(__name__)


class Mailer:
    """Sends one message at a time, each under a deadline; answers why one did not go."""

    def __init__(self, smtp: SmtpSettings, timeout_s: float = 10.0) -> None:
        self.smtp = smtp
        self.timeout_s = timeout_s

    async def send(self, to: str, subject: str, text: str, message_id: str) -> tuple[bool, str | None]:
        """(done, error): done when the server took it, or refused this recipient for good."""
        message = EmailMessage()
        message["From"] = self.smtp.sender
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(message_id.replace("-", ""), "ticketing")
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        try:
            async with asyncio.timeout(self.timeout_s):
                await aiosmtplib.send(
                    message,
                    hostname=self.smtp.host,
                    port=self.smtp.port,
                    username=self.smtp.username,
                    password=str(self.smtp.password) if self.smtp.password else None,
                    use_tls=self.smtp.use_tls,
                    start_tls=self.smtp.start_tls,
                    timeout=self.timeout_s,
                    cert_bundle=self.smtp.cafile,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = sorted({r.code for r in exc.recipients})
            return (all(c >= 500 for c in codes), f"SMTP recipient refused ({codes[0]})")
        except aiosmtplib.SMTPAuthenticationError as exc:
            return False, f"SMTP authentication failed ({exc.code})"
        except aiosmtplib.SMTPResponseException as exc:
            return (exc.code >= 500 and exc.code != 530, f"SMTP {exc.code}")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("mail to %s: %s", self.smtp.host, type(exc).__name__)
            return False, "could not reach the mail server"
        return True, None

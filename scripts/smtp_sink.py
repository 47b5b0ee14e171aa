"""The development SMTP sink: every accepted message lands as a file in a Maildir.

A recipient whose local part starts with ``defer-`` is answered ``451`` (a temporary
refusal), the way a busy or greylisting relay answers, so tests can watch retries end in a
recorded failure while every other recipient is delivered.
"""

from aiosmtpd.handlers import Mailbox


class Sink(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@", 1)[0].lower().startswith("defer-"):
            return "451 4.7.1 deferred: try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

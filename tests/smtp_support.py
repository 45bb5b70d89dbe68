"""A real SMTP server (aiosmtpd) on 127.0.0.1 for the e-mail tests, and the settings pointing at it."""

from __future__ import annotations

import socket

import pytest


class Inbox:
    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def smtp_server():
    controller_module = pytest.importorskip("aiosmtpd.controller")
    inbox = Inbox()
    controller = controller_module.Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def smtp(smtp_server, monkeypatch):
    """The inbox of the local SMTP server, emptied, with the smtp_* settings pointing at it."""
    controller, inbox = smtp_server
    inbox.envelopes.clear()
    monkeypatch.setenv("BLUEROCKTEL_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("BLUEROCKTEL_SMTP_PORT", str(controller.port))
    monkeypatch.setenv("BLUEROCKTEL_SMTP_FROM", "factures@bluerock.example")
    return inbox

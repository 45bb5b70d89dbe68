"""The e-mail outbox against a real SMTP server (aiosmtpd) on 127.0.0.1."""

import datetime as dt
import email
import os
from concurrent.futures import ThreadPoolExecutor
from email import policy

import pytest
import sqlalchemy as sa

from bluerocktel.db.models import Account, Brand, EmailMessage, Invoice
from bluerocktel.errors import UserFacingError
from bluerocktel.mail import MAX_ATTEMPTS, queue_email, send_queued
from smtp_support import free_port   # the smtp fixture comes from conftest
from test_sepa import run_cli

PDF = b"%PDF-1.4\n% invoice FA-2026-000007\n%%EOF\n"


def make_invoice(wb) -> int:
    with wb.db.transaction() as s:
        brand = Brand(code="BRT", name="BlueRock", legal_name="BlueRock Télécom SAS")
        s.add(brand)
        s.flush()
        account = Account(number="C001", brand_id=brand.id, name="Boulangerie Martin")
        s.add(account)
        s.flush()
        invoice = Invoice(number="FA-2026-000007", account_id=account.id, brand_id=brand.id,
                          period_start=dt.date(2026, 10, 1), period_end=dt.date(2026, 11, 1),
                          issue_date=dt.date(2026, 11, 1), due_date=dt.date(2026, 12, 1),
                          subtotal_minor=3000, vat_minor=600, total_minor=3600)
        s.add(invoice)
        s.flush()
        return invoice.id


def test_queued_invoice_mail_is_sent_once_with_its_pdf(wb, smtp):
    invoice_id = make_invoice(wb)
    (wb.data_dir / "documents" / "invoices").mkdir(parents=True)
    (wb.data_dir / "documents/invoices/FA-2026-000007.pdf").write_bytes(PDF)
    with wb.db.transaction() as s:
        queued = queue_email(s, "compta@martin.example, patron@martin.example", "Votre facture FA-2026-000007",
                             "Bonjour,\nvotre facture de 36,00 € est jointe.\n",
                             attachments=["documents/invoices/FA-2026-000007.pdf"],
                             related=("invoice", invoice_id))
        message_id = queued.id

    assert send_queued(wb) == {"sent": 1, "failed": 0, "errors": [], "stopped": None}
    assert send_queued(wb)["sent"] == 0                     # nothing is sent twice

    assert len(smtp.envelopes) == 1
    envelope = smtp.envelopes[0]
    assert envelope.mail_from == "factures@bluerock.example"
    assert envelope.rcpt_tos == ["compta@martin.example", "patron@martin.example"]
    received = email.message_from_bytes(envelope.content, policy=policy.default)
    assert received["Subject"] == "Votre facture FA-2026-000007"
    assert received["To"] == "compta@martin.example, patron@martin.example"
    assert received["Message-ID"].startswith(f"<bluerocktel.{message_id}.")
    assert received.get_body(("plain",)).get_content() == "Bonjour,\r\nvotre facture de 36,00 € est jointe.\r\n"
    [attachment] = list(received.iter_attachments())
    assert attachment.get_filename() == "FA-2026-000007.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == PDF

    with wb.db.session() as s:
        row = s.get(EmailMessage, message_id)
        assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
        assert row.sent_at is not None
        invoice = s.get(Invoice, invoice_id)
        assert invoice.status == "sent" and invoice.sent_at is not None


def test_refused_connection_marks_failed_then_retries(wb, smtp, monkeypatch, capsys):
    with wb.db.transaction() as s:
        message_id = queue_email(s, "admin@durand.example", "Relance", "Merci de régler.").id
    server_port = os.environ["BLUEROCKTEL_SMTP_PORT"]
    monkeypatch.setenv("BLUEROCKTEL_SMTP_PORT", str(free_port()))     # nobody listens there

    result = send_queued(wb)
    assert (result["sent"], result["failed"]) == (0, 1)
    assert "Connection refused" in result["stopped"]
    with wb.db.session() as s:
        row = s.get(EmailMessage, message_id)
        assert (row.status, row.attempts) == ("failed", 1)
        assert row.last_error.startswith("cannot reach SMTP server:") and "Connection refused" in row.last_error

    monkeypatch.setenv("BLUEROCKTEL_SMTP_PORT", server_port)          # the server is back
    assert run_cli("emails", "send", "--data-dir", str(wb.data_dir)) == 0        # through the CLI
    assert capsys.readouterr().out == "1 sent, 0 failed\n"
    assert send_queued(wb)["sent"] == 0
    assert len(smtp.envelopes) == 1
    with wb.db.session() as s:
        row = s.get(EmailMessage, message_id)
        assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_missing_attachment_fails_that_message_only_and_attempts_stop_at_five(wb, smtp):
    with wb.db.transaction() as s:
        broken = queue_email(s, "a@example.org", "Facture", "x", attachments=["documents/missing.pdf"]).id
        fine = queue_email(s, "b@example.org", "Facture", "y").id
    result = send_queued(wb)
    assert (result["sent"], result["failed"]) == (1, 1)
    assert result["errors"][0]["id"] == broken and "missing.pdf" in result["errors"][0]["error"]
    for _ in range(MAX_ATTEMPTS + 2):
        send_queued(wb)
    with wb.db.session() as s:
        assert s.get(EmailMessage, broken).attempts == MAX_ATTEMPTS == 5
        assert s.get(EmailMessage, broken).status == "failed"
        assert s.get(EmailMessage, fine).status == "sent"
    assert [e.rcpt_tos for e in smtp.envelopes] == [["b@example.org"]]


def test_two_concurrent_senders_send_each_message_once(wb, smtp):
    with wb.db.transaction() as s:
        for n in range(20):
            queue_email(s, f"client{n:02d}@example.org", f"Facture {n}", "x")
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: send_queued(wb), range(2)))
    assert sum(r["sent"] for r in results) == 20
    assert sorted(e.rcpt_tos[0] for e in smtp.envelopes) == [f"client{n:02d}@example.org" for n in range(20)]
    with wb.db.session() as s:
        assert set(s.scalars(sa.select(EmailMessage.attempts))) == {1}
    # A sender killed while sending leaves the message queued with an attempt: never sent again by itself.
    with wb.db.transaction() as s:
        interrupted = queue_email(s, "late@example.org", "Facture 21", "x")
        interrupted.attempts, interrupted.last_error = 1, "sending since 2026-12-01 10:00:00 UTC"
    assert send_queued(wb)["sent"] == 0
    assert len(smtp.envelopes) == 20


BAD_MESSAGES = [
    ("", "Facture", (), "no recipient"),
    ("not-an-address", "Facture", (), "'not-an-address' is not an e-mail address"),
    ("a@example.org", "Facture\nBcc: x@evil.example", (), "one non-empty line"),
    ("a@example.org", "Facture", ("../secret_key",), "inside the data dir"),
    ("a@example.org", "Facture", ("/etc/passwd",), "inside the data dir"),
]


def test_queue_refuses_bad_messages(wb):
    with wb.db.session() as s:
        for to, subject, attachments, message in BAD_MESSAGES:
            with pytest.raises(UserFacingError, match=message):
                queue_email(s, to, subject, "body", attachments=attachments)
        assert s.scalar(sa.select(sa.func.count()).select_from(EmailMessage)) == 0

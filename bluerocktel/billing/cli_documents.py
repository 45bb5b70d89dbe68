"""``bluerocktel billing documents render|export|check``: invoice documents from the command line.

- ``render FA-2026-000123 ...`` (or ``--period 2026-03``): Factur-X PDF and call-detail annex again.
- ``export FA-2026-000123 --format cii|ubl [--output FILE]``: the e-invoice XML.
- ``check FILE``: a Factur-X PDF, a CII XML or a UBL XML against its XSD and the EN 16931
  schematron, and a PDF against PDF/A-3b (pikepdf's validator); exit status 1 when it has errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from bluerocktel.errors import NotFoundError, UserFacingError


def add_commands(sub, common) -> None:
    """Add the ``documents`` group to the ``billing`` subparsers ``sub``."""
    documents = sub.add_parser("documents", help="invoice PDFs, Factur-X and UBL").add_subparsers(
        dest="documents_command", required=True)
    p = documents.add_parser("render", parents=[common], help="render the Factur-X PDF and annex of invoices")
    p.add_argument("numbers", nargs="*", metavar="NUMBER", help="invoice or credit-note numbers")
    p.add_argument("--period", help="every invoice of this period (YYYY-MM) instead")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: by count)")
    p.set_defaults(func=cmd_render)
    p = documents.add_parser("export", parents=[common], help="write the CII or UBL XML of an invoice")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--format", choices=("cii", "ubl"), default="cii")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_export)
    p = documents.add_parser("check", parents=[common], help="validate a Factur-X PDF or a CII/UBL XML file")
    p.add_argument("file")
    p.set_defaults(func=cmd_check)


def _workbench(args):
    from bluerocktel.workbench import Workbench

    return Workbench.open(args.data_dir)


def cmd_render(args) -> int:
    from bluerocktel.billing.periods import parse_period
    from bluerocktel.db.models import Invoice
    from bluerocktel.documents.batch import render_invoice_documents

    if bool(args.numbers) == bool(args.period):
        raise UserFacingError("name the invoices to render, or give --period YYYY-MM (not both)")
    wb = _workbench(args)
    with wb.db.session() as s:
        query = sa.select(Invoice.number, Invoice.id).order_by(Invoice.number)
        if args.period:
            query = query.where(Invoice.period_start == parse_period(args.period).period_start)
        else:
            query = query.where(Invoice.number.in_(args.numbers))
        found = dict(s.execute(query).all())
    missing = [n for n in args.numbers if n not in found]
    if missing:
        raise NotFoundError(f"no invoice {', '.join(map(repr, missing))}")
    paths = render_invoice_documents(wb, list(found.values()), workers=args.workers)
    print(json.dumps({"rendered": paths}, indent=2) if args.json else "\n".join(paths) or "no invoice")
    return 0


def cmd_export(args) -> int:
    from bluerocktel.db.models import Invoice
    from bluerocktel.documents.facturx import facturx_xml
    from bluerocktel.documents.ubl import ubl_xml

    wb = _workbench(args)
    with wb.db.session() as s:
        invoice = s.scalar(sa.select(Invoice).where(Invoice.number == args.number).options(
            selectinload(Invoice.lines), selectinload(Invoice.account), selectinload(Invoice.brand)))
        if invoice is None:
            raise NotFoundError(f"no invoice {args.number!r}")
        xml = facturx_xml(invoice) if args.format == "cii" else ubl_xml(invoice)
    if args.output:
        Path(args.output).write_bytes(xml)
    else:
        sys.stdout.write(xml.decode("utf-8"))
    return 0


def cmd_check(args) -> int:
    from bluerocktel.documents.facturx import extract_facturx_xml
    from bluerocktel.documents.pdfa import pdfa_problems
    from bluerocktel.documents.validation import validate_facturx_xml, validate_ubl_xml

    path = Path(args.file)
    if not path.is_file():
        raise NotFoundError(f"no file {args.file!r}")
    data = path.read_bytes()
    is_pdf, pdf_errors = data.startswith(b"%PDF"), []
    if is_pdf:
        pdf_errors = pdfa_problems(data)
        try:
            data = extract_facturx_xml(data)
        except Exception as exc:  # noqa: BLE001 - factur-x raises bare exceptions for PDFs without XML
            raise UserFacingError(f"{args.file}: no Factur-X XML attached ({exc})") from None
        if not data:
            raise UserFacingError(f"{args.file}: no Factur-X XML attached")
    ubl = b"urn:oasis:names:specification:ubl:schema:xsd:" in data[:2000]
    errors = pdf_errors + (validate_ubl_xml(data) if ubl else validate_facturx_xml(data))
    if args.json:
        print(json.dumps({"file": args.file, "format": "ubl" if ubl else "cii", "errors": errors}, indent=2))
    else:
        kind = "UBL" if ubl else "Factur-X CII"
        print("\n".join(errors) if errors else f"{args.file}: valid ({kind}, EN 16931{', PDF/A-3b' if is_pdf else ''})")
    return 1 if errors else 0

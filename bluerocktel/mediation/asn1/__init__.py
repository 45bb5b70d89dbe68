"""ASN.1 modules shipped with BlueRockTEL (package data, read with :func:`module_text`).

- ``ts32298.asn``: the project's own module for 3GPP TS 32.298 circuit-switched MSC call
  records (MOCallRecord, MTCallRecord), used by the ``3gpp-ber`` format
  (:mod:`bluerocktel.mediation.formats.ber`). The published 3GPP modules do not compile in
  asn1tools as they are (they import MAP/CAMEL types built on information-object classes), so
  this module declares only what is read, with the real 32.298 tags.
"""

from __future__ import annotations

from importlib import resources


def module_text(name: str) -> str:
    """The text of the shipped ASN.1 module ``name`` (e.g. ``"ts32298.asn"``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")

"""Authenticated downloads for the portal: ``/portal/invoices/{id}.pdf`` and the call-detail
annex ``/portal/invoices/{id}-annex.pdf`` (rendered on first download).

The route sits under ``/portal``, so :class:`~bluerocktel.web.middleware.SessionAuthMiddleware`
has already checked the session and put the customer on the scope; the file is looked up
through :class:`~bluerocktel.portal.PortalStore`, so another account's invoice is a 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from bluerocktel.errors import NotFoundError
from bluerocktel.portal import PortalStore
from bluerocktel.security import AuthError, Principal

router = APIRouter(include_in_schema=False)


def _principal(request: Request) -> Principal:
    principal = request.scope.get("user")
    if not isinstance(principal, Principal):
        raise AuthError("sign in first")     # only reachable if the middleware is missing
    return principal


@router.get("/portal/invoices/{invoice_id:int}.pdf")
def download_invoice_pdf(request: Request, invoice_id: int) -> FileResponse:
    principal = _principal(request)
    try:
        store = PortalStore(request.app.state.wb, principal.user_id)
    except AuthError:
        raise NotFoundError(f"no invoice {invoice_id}") from None
    path, filename = store.invoice_pdf_path(invoice_id)
    return _pdf(path, filename)


@router.get("/portal/invoices/{invoice_id:int}-annex.pdf")
def download_invoice_annex(request: Request, invoice_id: int) -> FileResponse:
    try:
        store = PortalStore(request.app.state.wb, _principal(request).user_id)
    except AuthError:
        raise NotFoundError(f"no invoice {invoice_id}") from None
    return _pdf(*store.invoice_annex_path(invoice_id))


def _pdf(path, filename: str) -> FileResponse:
    return FileResponse(path, media_type="application/pdf", filename=filename,
                        headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})

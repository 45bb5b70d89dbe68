"""API tokens limited to scopes: a token can do what its role allows AND its scopes list, nothing more."""

from __future__ import annotations

import pytest

from bluerocktel.db.models import User
from bluerocktel.errors import UserFacingError
from bluerocktel.security import create_api_token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _token(wb, user_id: int, scopes):
    with wb.db.transaction() as s:
        return create_api_token(s, s.get(User, user_id), "scoped", scopes)


def test_a_read_only_invoices_token_of_an_admin_reads_invoices_and_nothing_else(wb, client, sample):
    token = _token(wb, sample.user_ids["admin"], ["invoices:read"])
    assert client.get("/api/v1/invoices", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/billing-runs", headers=bearer(token)).status_code == 200   # needs invoices:read
    assert client.get("/api/v1/accounts", headers=bearer(token)).status_code == 403
    assert client.get("/api/v1/tickets", headers=bearer(token)).status_code == 403
    refused = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=bearer(token))
    assert refused.status_code == 403 and "webhooks:write" in refused.json()["detail"]


def test_scopes_never_widen_a_role(wb, client, sample):
    """A sales user's token asking for billing:issue is created, but its role still may not issue."""
    token = _token(wb, sample.user_ids["sales"], ["billing:issue", "accounts:read"])
    assert client.get("/api/v1/accounts", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/invoices", headers=bearer(token)).status_code == 403


def test_unknown_scopes_are_refused(wb, sample, capsys):
    with pytest.raises(UserFacingError, match="unknown token scope"):
        _token(wb, sample.user_ids["admin"], ["invoices:reed"])
    from bluerocktel.cli import main

    assert main(["token", "create", "admin@bluerock.example", "--scopes", "nope",
                 "--data-dir", str(wb.data_dir)]) == 2
    assert "unknown token scope(s) nope" in capsys.readouterr().err
    assert main(["token", "create", "admin@bluerock.example", "--scopes", "invoices:read,accounts:read",
                 "--data-dir", str(wb.data_dir)]) == 0
    assert capsys.readouterr().out.startswith("brt_")

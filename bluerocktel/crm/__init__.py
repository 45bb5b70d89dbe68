"""CRM: accounts, contacts, contracts, quotes, services and their lifecycle."""


def fetch(session, model, object_id: int, what: str):
    """The ``model`` row ``object_id``, or NotFoundError naming ``what`` (404 in the API)."""
    from bluerocktel.errors import NotFoundError

    row = session.get(model, object_id)
    if row is None:
        raise NotFoundError(f"no {what} {object_id}")
    return row

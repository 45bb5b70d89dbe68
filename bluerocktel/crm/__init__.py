"""CRM: accounts, contacts, contracts, quotes, services and their lifecycle."""

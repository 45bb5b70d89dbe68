"""Collector tests (SFTP against a real sshd, databases)."""

"""An exception module that clients may or may not allow (allowed_remote_exmods)."""


class InventoryError(Exception):
    """Raised by the test server's ``fail_custom`` endpoint."""

"""Export: sessions and their messages as JSON lines, for ``bridge export`` and the API's
``GET /sessions/{id}/export``. Paged reads, so memory stays flat however long the history."""

from bridge.export.stream import PAGE_SIZE, ExportError, start_export

__all__ = ["PAGE_SIZE", "ExportError", "start_export"]

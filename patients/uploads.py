"""The upload handler that keeps a report over REPORT_MAX_BYTES off the disk while Django parses the body.

Django's own handler would copy every uploaded byte to a temporary file before any view runs, so a 5 GB
upload filled /tmp before `report_upload` could say no. This one writes a file only up to the cap; past it
the temporary file is dropped and the rest is only counted. The view still gets an entry for the file, with
its true size and no content, so `patients.services.report_upload` refuses it (413, named) like any other
bad file and the batch keeps none. (The server reads the request body itself before Django sees it; this
is the earliest point Django allows.)
"""

from __future__ import annotations

import io

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class OversizeUpload(UploadedFile):
    """An upload over the cap: its name and size, none of its bytes."""

    def __init__(self, name: str, content_type: str | None, size: int) -> None:
        super().__init__(io.BytesIO(), name, content_type, size)


class ReportSizeCapUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.over_cap = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if not self.over_cap and start + len(raw_data) > settings.REPORT_MAX_BYTES:
            self.over_cap = True
            self.upload_interrupted()  # closes and removes the partial temporary file
        if not self.over_cap:
            self.file.write(raw_data)

    def file_complete(self, file_size: int) -> UploadedFile:
        if self.over_cap:
            return OversizeUpload(self.file_name, self.content_type, file_size)
        return super().file_complete(file_size)

"""Upload forms: a presigned POST into the uploads bucket, under the user's own prefix.

The form binds one fresh key (``users/<user>/uploads/<uuid>.<ext>``), the declared
content type (from the allow-list: JPEG, PNG, WebP, and HEIC/HEIF where pillow-heif is
installed) and a size range of 1 byte to the declared size, which must be within
IMAGE_MAX_UPLOAD_BYTES; S3 refuses any other upload. The form tags the photo
``expire=uploads``: the bucket's lifecycle rule deletes it UploadsExpireAfterDays later
(template.yaml). A generation never reads its source again after it ran.
"""

from __future__ import annotations

import uuid

from common import storage
from common.errors import InvalidInput, PayloadTooLarge
from process_image import images
from process_image import settings as settings_module
from process_image.models import UploadOut

#: The tags of every uploaded photo: what UploadsBucket's expire-uploads rule matches.
EXPIRY_TAGS = {"expire": "uploads"}


def create_form(user_id: uuid.UUID, content_type: str, size: int) -> UploadOut:
    s = settings_module.get()
    types = images.upload_types()
    declared = content_type.strip().lower()
    if declared not in types:
        raise InvalidInput(f"content_type must be one of: {', '.join(types)}", code="unsupported_image_type")
    if size > s.IMAGE_MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(f"images may be at most {s.IMAGE_MAX_UPLOAD_BYTES} bytes")
    key = storage.user_key(user_id, "uploads", f"{uuid.uuid4()}.{types[declared]}")
    form = storage.presigned_post(s.bucket("UPLOADS_BUCKET"), key, content_types=list(types),
                                  content_type=declared, max_bytes=size, expires_s=s.UPLOAD_URL_TTL_S,
                                  tags=EXPIRY_TAGS)
    return UploadOut(key=key, url=form["url"], fields=form["fields"], expires_at=form["expires_at"],
                     max_bytes=size)

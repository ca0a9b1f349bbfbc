"""Images: what to pull and the pull itself as a background task (``ImageService``), and
customised images: commit, export, push (``ImageCommitService``)."""
from berth.images.commit import ImageCommitService
from berth.images.service import ImageBackend, ImageService

__all__ = [
    "ImageBackend",
    "ImageCommitService",
    "ImageService",
]

"""The on-disk layout of a prepared dataset, shared by its writer and its readers."""

FORMAT_VERSION = 1
MANIFEST_FIELDS = ("file", "sha256", "source", "source_sha256", "source_bytes", "source_width",
                   "source_height", "source_mode", "cropped")

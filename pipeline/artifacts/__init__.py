"""The on-disk layout of the artifacts that one stage writes and another reads: file names in one
place, and typed models of their JSON so that a reader fails on a mismatch with the file and the
field named, not with a ``KeyError`` deep in the last stage.

The reader and the writer (``read_artifact``, ``write_artifact``) live in :mod:`.base`, not here:
package ``__init__`` files hold only docstrings, so that a stage's ``deps`` in ``dvc.yaml`` (its
import closure without them) miss no code."""

"""The on-disk layout of the artifacts that one stage writes and another reads: file names in one
place, and typed models of their JSON so that a reader fails on a mismatch with the file and the
field named, not with a ``KeyError`` deep in the last stage."""

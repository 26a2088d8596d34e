"""The on-disk layout of the artifacts that one package's stage writes and another's reads (the
TFLite models, the evaluation results, the release): file names in one place, and typed models of
their JSON so that a reader fails on a mismatch with the file and the field named, not with a
``KeyError`` deep in the last stage. An artifact written and read within one package keeps its
layout there: the dataset's in ``pipeline.data.layout``, the reference set's in
``pipeline.metrics.reference``; both use the models and reader of :mod:`.base`.

The reader and the writer (``read_artifact``, ``write_artifact``) live in :mod:`.base`, not here:
package ``__init__`` files hold only docstrings, so that a stage's ``deps`` in ``dvc.yaml`` (its
import closure without them) miss no code."""

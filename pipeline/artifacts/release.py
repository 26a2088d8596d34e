"""The release bundle (the ``bundle`` stage): one folder, as a directory and as a zip, holding the
deployed student's TFLite models with their interface cards, ``MODEL_CARD.md``, ``params.yaml``,
``metrics.json`` and ``SHA256SUMS`` (one ``<sha256>  <file>`` line per other file)."""

MODELS = ("student_float16", "student_float32")  # file stems: <stem>.tflite and <stem>.json
SUMS = "SHA256SUMS"
